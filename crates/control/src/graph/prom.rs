//! Reads the Prometheus text format (version 0.0.4) as the proxies write it:
//! one sample a line, `name{label="value",...} value [timestamp]`, comments
//! and blank lines skipped. Only what the graph needs; a line it cannot read
//! is skipped (a proxy's metrics must not stop the graph of the others).

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: BTreeMap<&'a str, String>,
    pub value: f64,
}

/// The samples of `text` whose metric name `wanted` accepts, in order.
pub fn samples<'a>(
    text: &'a str,
    wanted: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = Sample<'a>> + 'a {
    text.lines().filter_map(move |line| {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_ascii_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if !wanted(name) {
            return None;
        }
        let rest = &line[name_end..];
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(inner) => labels(inner)?,
            None => (BTreeMap::new(), rest),
        };
        let value = rest.split_ascii_whitespace().next()?;
        Some(Sample {
            name,
            labels,
            value: parse_value(value)?,
        })
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// The labels after a `{`, and what follows the closing `}`.
fn labels(mut text: &str) -> Option<(BTreeMap<&str, String>, &str)> {
    let mut out = BTreeMap::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((out, rest));
        }
        let (name, rest) = text.split_once('=')?;
        let quoted = rest.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in quoted.char_indices() {
            match (escaped, c) {
                (true, 'n') => value.push('\n'),
                (true, c) => value.push(c),
                (false, '\\') => {}
                (false, '"') => {
                    end = Some(i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
            escaped = !escaped && c == '\\';
        }
        out.insert(name.trim(), value);
        text = &quoted[end?..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_and_values() {
        let text = "# HELP istio_requests_total Total requests.\n\
            # TYPE istio_requests_total counter\n\
            istio_requests_total{reporter=\"destination\",path=\"a\\\"b\\\\c\\nd\",empty=\"\"} 42\n\
            istio_request_duration_milliseconds_bucket{le=\"+Inf\"} 7 1700000000000\n\
            other_metric 3\n\
            \n\
            istio_requests_total 1.5e3\n\
            istio_requests_total{broken=\"x} 9\n";
        let all: Vec<_> = samples(text, |n| n.starts_with("istio_")).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].name, "istio_requests_total");
        assert_eq!(all[0].labels["reporter"], "destination");
        assert_eq!(all[0].labels["path"], "a\"b\\c\nd");
        assert_eq!(all[0].labels["empty"], "");
        assert_eq!(all[0].value, 42.0);
        assert_eq!(all[1].labels["le"], "+Inf");
        assert_eq!(all[1].value, 7.0);
        assert!(all[2].labels.is_empty());
        assert_eq!(all[2].value, 1500.0);
    }
}
