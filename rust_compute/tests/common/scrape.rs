//! Reads the metrics endpoint the way a Prometheus scraper does: one
//! HTTP/1.1 GET, then the text exposition format parsed into samples.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP answer.
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// `GET path` on `addr`, with the connection closed after the answer.
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to metrics");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read answer");
        raw
    };
    let raw = tokio::time::timeout(super::PATIENCE, exchange)
        .await
        .expect("metrics answer within the deadline");
    let raw = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The samples of one exposition.
pub struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    /// Parses the Prometheus text format (comments skipped).
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("series and value");
                let value: f64 = value.parse().expect("numeric value");
                match series.split_once('{') {
                    None => (series.to_owned(), BTreeMap::new(), value),
                    Some((name, labels)) => {
                        let labels = labels.strip_suffix('}').expect("closing brace");
                        (name.to_owned(), parse_labels(labels), value)
                    }
                }
            })
            .collect();
        Self(samples)
    }

    /// The value of the series `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.0
            .iter()
            .find(|(series, labels, _)| series == name && *labels == want)
            .map(|(_, _, value)| *value)
    }

    /// Like [`get`](Self::get), failing the test when the series is absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

/// `key="value",...` with the format's escapes (`\\`, `\"`, `\n`).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("key=\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => match chars.next().expect("escaped character") {
                    (_, 'n') => value.push('\n'),
                    (_, other) => value.push(other),
                },
                (at, '"') => break at,
                (_, other) => value.push(other),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}
