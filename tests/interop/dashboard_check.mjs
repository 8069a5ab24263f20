// Drives the dashboard in a real headless Chromium (playwright-core, with
// the system's chromium) against a running Petrel: the page loads, the
// connection count follows a client connecting, the chart moves while a
// publisher runs, and the Kick button disconnects the client (MQTT 5:
// DISCONNECT 0x98). Screenshots go to the directory given.
//
// node dashboard_check.mjs ADMIN_URL MQTT_PORT SCREENSHOT_DIR
import { chromium } from "playwright-core";
import mqtt from "mqtt";

const [adminUrl, mqttPort, shots] = process.argv.slice(2);
const fail = (message) => {
  console.error("dashboard: FAIL: " + message);
  process.exit(1);
};
const connected = (options) =>
  new Promise((resolve, reject) => {
    const client = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, { reconnectPeriod: 0, ...options });
    client.once("connect", () => resolve(client));
    client.once("error", reject);
  });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => message.type() === "error" && errors.push(message.text()));
  await page.goto(adminUrl);
  await page.waitForFunction(() => document.getElementById("connections").textContent === "0");
  await page.waitForFunction(() => document.getElementById("status").textContent === "live");
  await page.screenshot({ path: `${shots}/1-loaded.png`, fullPage: true });

  const watched = await connected({ clientId: "dash-watched", protocolVersion: 5 });
  await page.waitForFunction(() => document.getElementById("connections").textContent === "1");
  await page.waitForSelector('#clients tr[data-client-id="dash-watched"]');

  await new Promise((resolve) => watched.subscribe("dash/#", { qos: 0 }, resolve));
  const publisher = await connected({ clientId: "dash-publisher" });
  const timer = setInterval(() => {
    for (let i = 0; i < 20; i++) publisher.publish("dash/load", "x");
  }, 20);
  await page.waitForFunction(
    () => Number(document.getElementById("rate-chart").dataset.maxIn) > 100,
    null,
    { timeout: 20000 },
  );
  await page.waitForFunction(() => document.getElementById("topic-tree").textContent.includes("dash"), null, {
    timeout: 15000,
  });
  await page.screenshot({ path: `${shots}/2-traffic.png`, fullPage: true });
  clearInterval(timer);

  const kicked = new Promise((resolve) => watched.once("disconnect", (packet) => resolve(packet.reasonCode)));
  await page.click('#clients tr[data-client-id="dash-watched"] button.kick');
  const reason = await Promise.race([kicked, new Promise((resolve) => setTimeout(() => resolve("none"), 10000))]);
  if (reason !== 0x98) fail(`the kicked client got DISCONNECT ${reason}, not 0x98`);
  await page.waitForFunction(() => !document.querySelector('#clients tr[data-client-id="dash-watched"]'));
  await page.waitForFunction(() => document.getElementById("connections").textContent === "1");
  await page.screenshot({ path: `${shots}/3-kicked.png`, fullPage: true });
  publisher.end(true);
  watched.end(true);
  if (errors.length) fail("errors in the page: " + errors.join("; "));
  console.log("dashboard: ok");
} catch (error) {
  fail(String(error && error.stack ? error.stack : error));
} finally {
  await browser.close();
}
