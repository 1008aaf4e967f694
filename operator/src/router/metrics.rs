//! Router metrics, prefixed `p2pcamera_router_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OfferLabels {
    /// `answered` or an error code such as `camera_busy`.
    pub result: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub offers: Family<OfferLabels, Counter>,
    pub forward_duration: Histogram,
    pub certificate_reloads: Counter,
    pub certificate_not_after: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("p2pcamera_router");
        let offers = Family::<OfferLabels, Counter>::default();
        registry.register("offers", "Offers received, by result", offers.clone());
        // 0.5 ms .. ~16 s
        let forward_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "forward_duration_seconds",
            "Time from receiving an offer to having the pod's answer",
            forward_duration.clone(),
        );
        let certificate_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "Serving certificates loaded",
            certificate_reloads.clone(),
        );
        let certificate_not_after = Gauge::default();
        registry.register(
            "certificate_not_after_seconds",
            "Expiry of the serving certificate, seconds since the Unix epoch",
            certificate_not_after.clone(),
        );
        Self {
            registry,
            offers,
            forward_duration,
            certificate_reloads,
            certificate_not_after,
        }
    }

    pub fn offer(&self, result: &'static str) {
        self.offers.get_or_create(&OfferLabels { result }).inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
