//! Results: one JSON line per run plus a readable summary, and medians with
//! ratios for `--compare`.

use std::collections::BTreeMap;

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub broker: String,
    pub parameters: Vec<(&'static str, String)>,
    pub figures: Vec<(&'static str, f64)>,
}

impl Report {
    /// The value of figure `name`, if the run reported it.
    pub fn figure(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(figure, _)| *figure == name)
            .map(|(_, value)| *value)
    }

    pub fn print(&self, json_only: bool) {
        let parameters: serde_json::Map<String, serde_json::Value> = self
            .parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
            .collect();
        let figures: serde_json::Map<String, serde_json::Value> = self
            .figures
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(round(*v))))
            .collect();
        let line = serde_json::json!({
            "scenario": self.scenario,
            "broker": self.broker,
            "parameters": parameters,
            "results": figures,
        });
        println!("{line}");
        if !json_only {
            let parameters: Vec<String> = self
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            eprintln!(
                "{} on {} ({})",
                self.scenario,
                self.broker,
                parameters.join(" ")
            );
            for (name, value) in &self.figures {
                eprintln!("  {name:<28} {}", human(*value));
            }
        }
    }
}

fn round(value: f64) -> f64 {
    if value.abs() >= 100.0 {
        value.round()
    } else {
        (value * 1000.0).round() / 1000.0
    }
}

fn human(value: f64) -> String {
    if value.abs() >= 1000.0 {
        let text = format!("{:.0}", value);
        let mut grouped = String::new();
        for (index, ch) in text.chars().rev().enumerate() {
            if index > 0 && index % 3 == 0 && ch != '-' {
                grouped.push(',');
            }
            grouped.push(ch);
        }
        grouped.chars().rev().collect()
    } else {
        format!("{value:.3}")
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Medians per broker and the ratio Petrel / Mosquitto for each figure.
pub fn print_comparison(reports: &[Report], json_only: bool) {
    let mut by_broker: BTreeMap<&str, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for report in reports {
        for (name, value) in &report.figures {
            if !order.contains(name) {
                order.push(name);
            }
            by_broker
                .entry(report.broker.as_str())
                .or_default()
                .entry(name)
                .or_default()
                .push(*value);
        }
    }
    let mut comparison = serde_json::Map::new();
    if !json_only {
        if let Some(first) = reports.first() {
            eprintln!(
                "\n{} medians over {} rounds",
                first.scenario,
                reports.len() / 2
            );
        }
        eprintln!(
            "  {:<28} {:>14} {:>14} {:>8}",
            "figure", "petrel", "mosquitto", "ratio"
        );
    }
    for name in order {
        let petrel = by_broker
            .get_mut("petrel")
            .and_then(|figures| figures.get_mut(name))
            .map(|values| median(values));
        let mosquitto = by_broker
            .get_mut("mosquitto")
            .and_then(|figures| figures.get_mut(name))
            .map(|values| median(values));
        let (Some(petrel), Some(mosquitto)) = (petrel, mosquitto) else {
            continue;
        };
        let ratio = if mosquitto != 0.0 {
            petrel / mosquitto
        } else {
            f64::NAN
        };
        comparison.insert(
            name.to_owned(),
            serde_json::json!({"petrel": round(petrel), "mosquitto": round(mosquitto), "ratio": round(ratio)}),
        );
        if !json_only {
            eprintln!(
                "  {name:<28} {:>14} {:>14} {:>8.2}",
                human(petrel),
                human(mosquitto),
                ratio
            );
        }
    }
    let scenario = reports
        .first()
        .map(|r| r.scenario.clone())
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({"scenario": scenario, "comparison": comparison})
    );
}
