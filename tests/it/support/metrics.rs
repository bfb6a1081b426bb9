//! Reading the gateway's Prometheus text (`GET /metrics`) in assertions.

/// The sum of the samples of `name` whose labels include every `labels` pair (all
/// series of `name` when `labels` is empty); 0 when there is none. `name` is the full
/// sample name (e.g. `relaygate_queue_delivery_duration_seconds_count`).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (*series, ""),
            };
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_by_labels() {
        let text =
            "# TYPE x counter\nx{a=\"1\",b=\"2\"} 3\nx{a=\"1\",b=\"3\"} 4\nx 1\nxy{a=\"1\"} 9\n";
        assert_eq!(sample(text, "x", &[]), 8.0);
        assert_eq!(sample(text, "x", &[("a", "1")]), 7.0);
        assert_eq!(sample(text, "x", &[("b", "3")]), 4.0);
        assert_eq!(sample(text, "x", &[("b", "9")]), 0.0);
        assert_eq!(sample(text, "nope", &[]), 0.0);
    }
}
