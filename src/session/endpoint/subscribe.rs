//! A client's SUBSCRIBE and UNSUBSCRIBE: each filter admitted against the
//! protocol's rules, the broker's features and limits and the ACL, with
//! its reason code; subscriptions made in the router and the store; the
//! retained messages of each new subscription streamed behind the SUBACK
//! ([`crate::session::retained`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::held::ticket;
use super::Endpoint;
use crate::config::Config;
use crate::context::{Context, Core};
use crate::protocol::topic::check_bounds;
use crate::protocol::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, TopicFilter,
    UnsubAck, Unsubscribe,
};
use crate::router::{shared as shared_groups, Subscriber};
use crate::session::exit::Exit;
use crate::session::retained::Backlog;

/// What one filter of a SUBSCRIBE gets: a refusal code, or the options
/// granted; or a violation that ends the connection.
type Admission = Result<SubscriptionOptions, Result<ReasonCode, Exit>>;

impl Endpoint {
    /// SUBSCRIBE: SUBACK with the same packet id and one reason code per
    /// filter [MQTT-3.8.4-1] [MQTT-3.8.4-2] (v3.1.1), before any retained
    /// message, and once the store has the new subscriptions.
    pub(super) fn subscribe(
        &mut self,
        context: &Context,
        subscribe: Subscribe,
    ) -> Result<(), Exit> {
        let core = &context.core;
        let identifier = subscribe.properties.subscription_identifier;
        let mut changed_store = false;
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let repeated = repeated_filters(&subscribe);
        for ((filter, options), repeated) in subscribe.filters.into_iter().zip(repeated) {
            let options = match self.admit_filter(
                context,
                &filter,
                options,
                identifier.is_some(),
                repeated,
            ) {
                Ok(options) => options,
                Err(Ok(refused)) => {
                    reason_codes.push(refused);
                    continue;
                }
                Err(Err(exit)) => return Err(exit),
            };
            reason_codes.push(granted_code(options.qos));
            if repeated {
                continue;
            }
            changed_store |= self.add_subscription(core, filter, options, identifier);
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            reason_codes,
            properties: Default::default(),
        };
        self.send_after(core, Packet::SubAck(suback), ticket(core, changed_store));
        Ok(())
    }

    /// One filter against the rules, the features, the ACL and the
    /// client's subscription limit.
    fn admit_filter(
        &self,
        context: &Context,
        filter: &TopicFilter,
        options: SubscriptionOptions,
        has_identifier: bool,
        repeated: bool,
    ) -> Admission {
        let core = &context.core;
        let options = match admit(
            &core.config(),
            self.client_id(),
            filter,
            options,
            has_identifier,
        )? {
            options if self.limits.bridge => for_bridge(options, filter),
            options => options,
        };
        let inner = match shared_groups::parse(filter.as_str()) {
            Ok(Some((_, inner))) => inner,
            _ => filter.as_str(),
        };
        if !context.auth.may_subscribe(self.acl_client(), inner) {
            core.metrics.acl_denied.increment();
            tracing::info!(client_id = %self.client_id(), %filter, "ACL: subscription denied");
            return Err(Ok(ReasonCode::NotAuthorized));
        }
        if !repeated
            && self.state.subscriptions.get(filter).is_none()
            && self.state.subscriptions.len() >= core.config().max_subscriptions_per_client
        {
            core.metrics.subscriptions_refused.increment();
            tracing::info!(
                client_id = %self.client_id(),
                %filter,
                "max_subscriptions_per_client reached: subscription refused"
            );
            return Err(Ok(ReasonCode::QuotaExceeded));
        }
        Ok(options)
    }

    /// Makes (or replaces) a subscription in the router, the session and
    /// the store, and starts its retained messages; true if the store was
    /// told.
    fn add_subscription(
        &mut self,
        core: &Core,
        filter: TopicFilter,
        options: SubscriptionOptions,
        identifier: Option<std::num::NonZeroU32>,
    ) -> bool {
        let existed = core.router.subscribe(
            filter.as_str(),
            Subscriber {
                inbox: Arc::clone(&self.inbox),
                options,
                identifier,
                shared: None,
            },
        );
        // Retained messages: never on a shared subscription (section
        // 4.8.2, v5.0); otherwise as Retain Handling says [MQTT-3.3.1-9]
        // [MQTT-3.3.1-10] [MQTT-3.3.1-11] (v5.0). A repeated filter
        // replaces the subscription and, with handling 0, its retained
        // messages are sent again [MQTT-3.8.4-3] (v3.1.1).
        let send_retained = match options.retain_handling {
            RetainHandling::SendOnSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        let backlogs = self.state.retained.get_or_insert_with(Default::default);
        if send_retained && shared_groups::parse(filter.as_str()) == Ok(None) {
            // Streamed behind the SUBACK as the client takes them.
            backlogs.add(Backlog::new(filter.clone(), options.qos, identifier));
        } else {
            // A repeated subscription that sends none stops the old one's.
            backlogs.remove(&filter);
        }
        if backlogs.is_empty() {
            self.state.retained = None;
        }
        let store = self.store(core);
        if let Some(store) = store {
            store.subscribed(self.client_id(), &filter, options, identifier);
        }
        self.state.subscriptions.insert(filter, options, identifier);
        store.is_some()
    }

    /// UNSUBSCRIBE: UNSUBACK, even when nothing was subscribed
    /// [MQTT-3.10.4-4] (v3.1.1), once the store has forgotten what was.
    pub(super) fn unsubscribe(&mut self, core: &Core, unsubscribe: Unsubscribe) {
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        let mut changed_store = false;
        for filter in &unsubscribe.filters {
            let existed = core.router.unsubscribe(filter.as_str(), self.client_id());
            if let Some(backlogs) = self.state.retained.as_mut() {
                backlogs.remove(filter);
                if backlogs.is_empty() {
                    self.state.retained = None;
                }
            }
            if self.state.subscriptions.remove(filter) {
                if let Some(store) = self.store(core) {
                    store.unsubscribed(self.client_id(), filter);
                    changed_store = true;
                }
            }
            reason_codes.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        let unsuback = UnsubAck {
            packet_id: unsubscribe.packet_id,
            reason_codes,
            properties: Default::default(),
        };
        self.send_after(
            core,
            Packet::UnsubAck(unsuback),
            ticket(core, changed_store),
        );
    }
}

/// For each filter of `subscribe`, whether a later one repeats it: the
/// last one wins [MQTT-3.8.4-4] (v3.1.1), and its retained messages are
/// sent once.
fn repeated_filters(subscribe: &Subscribe) -> Vec<bool> {
    let last_index: HashMap<&str, usize> = subscribe
        .filters
        .iter()
        .enumerate()
        .map(|(index, (filter, _))| (filter.as_str(), index))
        .collect();
    subscribe
        .filters
        .iter()
        .enumerate()
        .map(|(index, (filter, _))| last_index.get(filter.as_str()) != Some(&index))
        .collect()
}

/// One filter against the protocol's rules and the broker's features.
fn admit(
    config: &Config,
    client_id: &str,
    filter: &TopicFilter,
    options: SubscriptionOptions,
    has_identifier: bool,
) -> Admission {
    let shared_group = shared_groups::parse(filter.as_str()).map_err(|rule| {
        tracing::info!(client_id, %filter, rule, "subscription refused");
        Ok(ReasonCode::TopicFilterInvalid)
    })?;
    if let Err(rule) = check_bounds(
        filter.as_str(),
        config.max_topic_length,
        config.max_topic_levels,
    ) {
        tracing::info!(client_id, %filter, rule, "subscription refused");
        return Err(Ok(ReasonCode::TopicFilterInvalid));
    }
    if shared_group.is_some() {
        if !config.shared_subscriptions {
            return Err(Ok(ReasonCode::SharedSubscriptionsNotSupported));
        }
        if options.no_local {
            return Err(Err(Exit::Violation(
                ReasonCode::ProtocolError,
                "[MQTT-3.8.3-4] No Local on a shared subscription",
            )));
        }
    }
    if !config.wildcard_subscriptions && filter.has_wildcard() {
        return Err(Ok(ReasonCode::WildcardSubscriptionsNotSupported));
    }
    if has_identifier && !config.subscription_identifiers {
        return Err(Ok(ReasonCode::SubscriptionIdentifiersNotSupported));
    }
    Ok(SubscriptionOptions {
        qos: options.qos.min(config.max_qos()),
        ..options
    })
}

/// A marked bridge's subscriptions are No Local: it is not sent back what
/// it published (the loop protection Mosquitto gives its bridges at 3.1.1,
/// which has no No Local of its own).
fn for_bridge(options: SubscriptionOptions, filter: &TopicFilter) -> SubscriptionOptions {
    let shared = matches!(shared_groups::parse(filter.as_str()), Ok(Some(_)));
    SubscriptionOptions {
        no_local: options.no_local || !shared,
        ..options
    }
}

fn granted_code(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}
