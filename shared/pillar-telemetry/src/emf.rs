//! CloudWatch Embedded Metric Format: one JSON line per set of metrics, turned into
//! metrics by CloudWatch Logs when it ingests the function's output.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// The units the pillars report in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Bytes => "Bytes",
            Self::Milliseconds => "Milliseconds",
            Self::Seconds => "Seconds",
        }
    }
}

/// Where every pillar's readiness is reported: `PillarReady`, by `Pillar`.
pub const READINESS_NAMESPACE: &str = "Pillars/Readiness";

/// `PillarReady` 1 (a build or a service could use the pillar now) or 0, for `pillar`
/// (`SourceControl`, `DockerMirror`, `Logging`): what each pillar's canary reports and its
/// readiness alarm watches.
pub fn pillar_ready(pillar: &str, ready: bool) -> Metrics {
    Metrics::new(READINESS_NAMESPACE).dimension("Pillar", pillar).value(
        "PillarReady",
        f64::from(u8::from(ready)),
        Unit::Count,
    )
}

/// Metric values sharing one namespace and one set of dimensions.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
    dimensions: Vec<(String, String)>,
    values: Vec<(String, f64, Unit)>,
}

impl Metrics {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), dimensions: Vec::new(), values: Vec::new() }
    }

    pub fn dimension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    pub fn value(mut self, name: impl Into<String>, value: f64, unit: Unit) -> Self {
        self.values.push((name.into(), value, unit));
        self
    }

    /// The EMF document for these metrics, stamped `timestamp_ms` after the epoch.
    pub fn to_json(&self, timestamp_ms: u128) -> Value {
        let definitions: Vec<Value> = self
            .values
            .iter()
            .map(|(name, _, unit)| json!({ "Name": name, "Unit": unit.as_str() }))
            .collect();
        let dimension_names: Vec<&str> = self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        // Values with dimensions count in the total without them too: an alarm or a graph
        // of the whole pillar reads that one metric, whichever repository emitted it.
        let dimension_sets = match dimension_names.is_empty() {
            true => json!([[]]),
            false => json!([dimension_names, []]),
        };
        let mut document = Map::new();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": dimension_sets,
                    "Metrics": definitions,
                }],
            }),
        );
        for (name, value) in &self.dimensions {
            document.insert(name.clone(), Value::from(value.as_str()));
        }
        for (name, value, _) in &self.values {
            document.insert(name.clone(), Value::from(*value));
        }
        Value::Object(document)
    }

    /// Writes the EMF line to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        writeln!(out, "{}", self.to_json(now))
    }

    /// Writes the EMF line to standard out, where Lambda's log capture picks it up. A
    /// metric that cannot be written is logged, never fatal.
    pub fn emit(&self) {
        if let Err(error) = self.write_to(&mut std::io::stdout().lock()) {
            tracing::warn!(%error, namespace = %self.namespace, "could not write metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_follows_the_emf_specification_and_counts_in_the_total_too() {
        let metrics = Metrics::new("Pillars/SourceControl")
            .dimension("Repository", "net")
            .value("RefsDrifted", 3.0, Unit::Count)
            .value("MirrorLagSeconds", 12.5, Unit::Seconds);
        assert_eq!(
            metrics.to_json(1_700_000_000_000),
            json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_000_u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "Pillars/SourceControl",
                        "Dimensions": [["Repository"], []],
                        "Metrics": [
                            {"Name": "RefsDrifted", "Unit": "Count"},
                            {"Name": "MirrorLagSeconds", "Unit": "Seconds"}
                        ]
                    }]
                },
                "Repository": "net",
                "RefsDrifted": 3.0,
                "MirrorLagSeconds": 12.5
            })
        );
    }

    #[test]
    fn written_as_one_json_line_with_a_current_timestamp() {
        let mut out = Vec::new();
        Metrics::new("N")
            .value("HeartbeatMissing", 0.0, Unit::Count)
            .write_to(&mut out)
            .expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        let document: Value = serde_json::from_str(&text).expect("json");
        let stamp = document["_aws"]["Timestamp"].as_u64().expect("timestamp");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
        assert!(now.abs_diff(stamp) < 60_000);
        assert_eq!(document["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    }
}
