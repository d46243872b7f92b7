//! Who a call is: its request id and its W3C trace context, read from the
//! request metadata and written back on the response.
//!
//! Every value read here is echoed in the response's metadata, so only
//! values that are valid to send back are kept: a header the peer cannot
//! accept fails the whole call. Anything else, non-ASCII bytes included, is
//! replaced (the request id, the trace) or dropped (`tracestate`), and the
//! call goes on.
//!
//! **Request id.** `x-request-id` follows a call from the edge through
//! py_gateway to here and back, so one id finds every log line about the
//! call in every service. A caller's id is kept if it is 1 to
//! [`REQUEST_ID_MAX_CHARS`] printable ASCII characters with no space at
//! either end, which HTTP/2 forbids (the rule the gateway applies too);
//! otherwise a UUID v4 replaces it, so every call has one.
//!
//! **Trace context.** A valid `traceparent` (W3C Trace Context, version
//! `00` layout; later versions are read by that layout as the
//! specification asks) continues the caller's trace: the response's
//! `traceparent` carries the same trace id with this service's own span id
//! as parent, and `tracestate` is returned when it is a valid W3C list
//! (its members as they came, joined by commas). A missing or malformed
//! `traceparent` starts a new trace (and any `tracestate` is dropped with
//! it, as the specification requires). The trace id and span
//! id are fields of every log line about the call; when spans are exported
//! ([`trace_export`](crate::trace_export)) the exported span has these ids.

use std::fmt::Write;

use tonic::codegen::http::{HeaderMap, HeaderValue};
use uuid::Uuid;

/// Metadata key of the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Metadata key of the W3C trace parent.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Metadata key of the W3C vendor trace state.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Longest request id kept, in characters; longer ones are replaced. Bounds
/// what a caller can put into every log line.
pub const REQUEST_ID_MAX_CHARS: usize = 128;

/// Longest `tracestate` returned, in bytes: the length the specification
/// asks every participant to propagate at least. A longer one is dropped.
pub const TRACESTATE_MAX_BYTES: usize = 512;

/// Most list members a `tracestate` may have (W3C Trace Context).
pub const TRACESTATE_MAX_MEMBERS: usize = 32;

/// Trace flags this service understands (`sampled`, and `random` of Trace
/// Context level 2); others are cleared on the way back, as version `00`
/// requires.
const KNOWN_TRACE_FLAGS: u8 = 0b11;

/// The identity of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The caller's request id, or a new UUID v4.
    pub request_id: String,
    /// Whether `request_id` was generated here.
    pub request_id_generated: bool,
    /// The trace the call belongs to.
    pub trace: TraceContext,
}

/// The W3C trace context of one call, as this service continues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id: the caller's, or new when it sent none (or a bad one).
    pub trace_id: [u8; 16],
    /// This service's span for the call, the parent id of whatever the
    /// response leads to.
    pub span_id: [u8; 8],
    /// Trace flags, limited to the ones this service understands.
    pub flags: u8,
    /// The caller's span, the parent of this one, when the trace continues.
    pub parent_id: Option<[u8; 8]>,
    /// The caller's `tracestate`, returned unchanged.
    pub state: Option<HeaderValue>,
    /// Whether the trace continues the caller's `traceparent`.
    pub continued: bool,
}

/// A parsed `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The caller's span, 8 bytes, not all zero.
    pub parent_id: [u8; 8],
    /// Trace flags as sent.
    pub flags: u8,
}

impl RequestContext {
    /// The context of a call with these request `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let given = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|value| valid_request_id(value.as_bytes()));
        let (request_id, request_id_generated) = match given {
            Some(id) => (id.to_owned(), false),
            None => (Uuid::new_v4().hyphenated().to_string(), true),
        };
        Self {
            request_id,
            request_id_generated,
            trace: TraceContext::from_headers(headers),
        }
    }

    /// Adds `x-request-id`, `traceparent` and (when the caller sent one)
    /// `tracestate` to response metadata: headers, or the trailers of a
    /// call that fails after its headers were sent.
    pub fn write_to(&self, metadata: &mut HeaderMap) {
        // A valid request id is printable ASCII and a generated one is a
        // UUID, so the conversion cannot fail; a failure would only cost
        // the echo.
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            metadata.insert(REQUEST_ID_HEADER, value);
        }
        if let Ok(value) = HeaderValue::from_str(&self.trace.traceparent()) {
            metadata.insert(TRACEPARENT_HEADER, value);
        }
        if let Some(state) = &self.trace.state {
            metadata.insert(TRACESTATE_HEADER, state.clone());
        }
    }
}

impl TraceContext {
    /// Continues the caller's trace if it sent a valid `traceparent`, else
    /// starts a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let parent = headers
            .get(TRACEPARENT_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_traceparent);
        match parent {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id: new_span_id(),
                flags: parent.flags & KNOWN_TRACE_FLAGS,
                parent_id: Some(parent.parent_id),
                state: tracestate(headers),
                continued: true,
            },
            None => Self {
                trace_id: *Uuid::new_v4().as_bytes(),
                span_id: new_span_id(),
                flags: 0,
                parent_id: None,
                state: None,
                continued: false,
            },
        }
    }

    /// The trace id as 32 lowercase hex digits, as logged.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The `traceparent` to send back: version `00`, the same trace id,
    /// this service's span as parent.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }
}

/// `value` as a request id if it is 1 to [`REQUEST_ID_MAX_CHARS`]
/// printable ASCII characters (space included, but not first or last).
pub fn valid_request_id(value: &[u8]) -> Option<&str> {
    let fits = (1..=REQUEST_ID_MAX_CHARS).contains(&value.len());
    let padded = value.first() == Some(&b' ') || value.last() == Some(&b' ');
    if !fits || padded || !value.iter().all(|byte| (b' '..=b'~').contains(byte)) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

/// Parses a `traceparent` value: `version-traceid-parentid-flags` in
/// lowercase hex (2-32-16-2 digits). Version `ff` and all-zero ids are
/// invalid; version `00` must end after the flags, later versions may
/// append `-`-separated fields, which are ignored.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = hex_bytes::<1>(&bytes[0..2])?[0];
    let exact_length = bytes.len() == 55;
    let valid_length = if version == 0 {
        exact_length
    } else {
        exact_length || bytes[55] == b'-'
    };
    if version == 0xff
        || !valid_length
        || bytes[2] != b'-'
        || bytes[35] != b'-'
        || bytes[52] != b'-'
    {
        return None;
    }
    let trace_id = hex_bytes::<16>(&bytes[3..35])?;
    let parent_id = hex_bytes::<8>(&bytes[36..52])?;
    let flags = hex_bytes::<1>(&bytes[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// The caller's `tracestate` when it is a valid W3C list: several headers
/// are one list, empty members are skipped, and each member must be a
/// well-formed `key=value`, at most [`TRACESTATE_MAX_MEMBERS`] of them in
/// at most [`TRACESTATE_MAX_BYTES`]. Returned as its members joined by
/// commas; anything invalid drops the whole list, as the specification
/// allows.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut members = Vec::new();
    for value in headers.get_all(TRACESTATE_HEADER) {
        for member in value.as_bytes().split(|&byte| byte == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if !valid_tracestate_member(member) {
                return None;
            }
            members.push(member);
        }
    }
    let joined = members.join(&b","[..]);
    if members.is_empty()
        || members.len() > TRACESTATE_MAX_MEMBERS
        || joined.len() > TRACESTATE_MAX_BYTES
    {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// `key=value` by W3C Trace Context: a key of lowercase letters, digits and
/// `_-*/` (optionally `tenant@system`), a value of up to 256 printable
/// ASCII characters other than `,` and `=` that does not end in a space.
fn valid_tracestate_member(member: &[u8]) -> bool {
    let Some(at) = member.iter().position(|&byte| byte == b'=') else {
        return false;
    };
    let (key, value) = (&member[..at], &member[at + 1..]);
    let key_char =
        |byte: &u8| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    let key_valid = match key.iter().position(|&byte| byte == b'@') {
        None => {
            (1..=256).contains(&key.len())
                && matches!(key[0], b'a'..=b'z' | b'0'..=b'9')
                && key.iter().all(key_char)
        }
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && (1..=14).contains(&system.len())
                && matches!(tenant[0], b'a'..=b'z' | b'0'..=b'9')
                && system[0].is_ascii_lowercase()
                && tenant.iter().all(key_char)
                && system.iter().all(key_char)
        }
    };
    let value_valid = (1..=256).contains(&value.len())
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&byte| (b' '..=b'~').contains(&byte) && byte != b',' && byte != b'=');
    key_valid && value_valid
}

/// A new span id: the last 8 bytes of a UUID v4, random but for the
/// variant bits, which also keep it from being all zero.
fn new_span_id() -> [u8; 8] {
    let (_, low) = Uuid::new_v4().as_u64_pair();
    low.to_be_bytes()
}

/// `N` bytes from `2 * N` lowercase hex digits; uppercase is invalid in a
/// `traceparent`.
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, byte| {
            // Writing to a String cannot fail.
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (key, value) in pairs {
            map.append(*key, HeaderValue::from_str(value).expect("valid header"));
        }
        map
    }

    #[test]
    fn parses_the_specification_example() {
        let parent = parse_traceparent(EXAMPLE).expect("valid");
        assert_eq!(hex(&parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parent.parent_id), "00f067aa0ba902b7");
        assert_eq!(parent.flags, 1);
    }

    #[test]
    fn later_versions_are_read_by_the_version_00_layout() {
        assert!(parse_traceparent(&format!("01{}", &EXAMPLE[2..])).is_some());
        assert!(parse_traceparent(&format!("cc{}-what-comes-next", &EXAMPLE[2..])).is_some());
        assert!(parse_traceparent(&format!("cc{}x", &EXAMPLE[2..])).is_none());
    }

    #[test]
    fn rejects_malformed_values() {
        for value in [
            "",
            "00",
            &EXAMPLE[..54],
            &format!("{EXAMPLE}-extra"),
            &format!("ff{}", &EXAMPLE[2..]),
            &EXAMPLE.to_uppercase(),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(value), None, "{value:?}");
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(valid_request_id(b"abc-123"), Some("abc-123"));
        assert_eq!(valid_request_id(b"with space"), Some("with space"));
        let longest = "x".repeat(REQUEST_ID_MAX_CHARS);
        assert_eq!(valid_request_id(longest.as_bytes()), Some(longest.as_str()));
        for bad in [
            &b""[..],
            "x".repeat(REQUEST_ID_MAX_CHARS + 1).as_bytes(),
            b"tab\there",
            b"nul\0",
            "caf\u{e9}".as_bytes(),
            b"caf\xe9",
            b"\x7f",
            b" leading",
            b"trailing ",
            b" ",
        ] {
            assert_eq!(valid_request_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_missing_request_id_becomes_a_uuid_v4() {
        let context = RequestContext::from_headers(&HeaderMap::new());
        assert!(context.request_id_generated);
        let id = Uuid::parse_str(&context.request_id).expect("a UUID");
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(context.request_id.len(), 36);

        let given = RequestContext::from_headers(&headers(&[("x-request-id", "req-1")]));
        assert_eq!(given.request_id, "req-1");
        assert!(!given.request_id_generated);
    }

    #[test]
    fn continues_the_callers_trace() {
        let context = TraceContext::from_headers(&headers(&[
            ("traceparent", EXAMPLE),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", "rojo=00f067aa0ba902b7"),
        ]));
        assert!(context.continued);
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            context.parent_id.map(|id| hex(&id)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_ne!(context.span_id, [0; 8]);
        assert_ne!(context.span_id_hex(), "00f067aa0ba902b7");
        let back = context.traceparent();
        assert!(
            back.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{back}"
        );
        assert!(back.ends_with("-01"), "{back}");
        assert_eq!(
            parse_traceparent(&back).map(|p| p.trace_id),
            Some(context.trace_id)
        );
        assert_eq!(
            context.state.as_ref().map(HeaderValue::as_bytes),
            Some(&b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"[..])
        );
    }

    #[test]
    fn a_bad_traceparent_starts_a_new_trace_and_drops_the_state() {
        let context = TraceContext::from_headers(&headers(&[
            ("traceparent", "00-nonsense"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]));
        assert!(!context.continued);
        assert_eq!(context.parent_id, None);
        assert_eq!(context.state, None);
        let back = parse_traceparent(&context.traceparent()).expect("a valid traceparent");
        assert_eq!(back.trace_id, context.trace_id);
        assert_eq!(back.flags, 0);
    }

    #[test]
    fn unknown_flags_are_cleared() {
        let context = TraceContext::from_headers(&headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
        )]));
        assert!(context.traceparent().ends_with("-03"));
    }

    #[test]
    fn an_oversized_tracestate_is_dropped() {
        let long = format!("k={}", "v".repeat(TRACESTATE_MAX_BYTES));
        let context = TraceContext::from_headers(&headers(&[
            ("traceparent", EXAMPLE),
            ("tracestate", &long),
        ]));
        assert!(context.continued);
        assert_eq!(context.state, None);
    }

    #[test]
    fn a_tracestate_is_returned_only_when_it_is_a_valid_list() {
        let state = |values: &[&str]| {
            let mut map = HeaderMap::new();
            map.append("traceparent", HeaderValue::from_static(EXAMPLE));
            for value in values {
                map.append("tracestate", HeaderValue::from_str(value).expect("valid"));
            }
            TraceContext::from_headers(&map)
                .state
                .map(|value| value.to_str().expect("ascii").to_owned())
        };
        assert_eq!(
            state(&[" a=1 ,, b@c=2 ", "x/y_z-1*=v v"]).as_deref(),
            Some("a=1,b@c=2,x/y_z-1*=v v")
        );
        let many = vec!["k=v"; TRACESTATE_MAX_MEMBERS + 1].join(",");
        for bad in [
            "A=1",
            "a",
            "a=",
            "=1",
            "a=1=2",
            "a=1 ,b=2 x=3",
            "a@B=1",
            "a@=1",
            "@b=1",
            many.as_str(),
        ] {
            assert_eq!(state(&["ok=1", bad]), None, "{bad:?}");
        }
        let mut non_ascii = HeaderMap::new();
        non_ascii.append("traceparent", HeaderValue::from_static(EXAMPLE));
        non_ascii.append(
            "tracestate",
            HeaderValue::from_bytes(b"a=caf\xc3\xa9").expect("obs-text is a valid header"),
        );
        assert_eq!(TraceContext::from_headers(&non_ascii).state, None);
    }

    #[test]
    fn response_metadata_carries_all_three() {
        let context = RequestContext::from_headers(&headers(&[
            ("x-request-id", "req-9"),
            ("traceparent", EXAMPLE),
            ("tracestate", "a=b"),
        ]));
        let mut metadata = HeaderMap::new();
        context.write_to(&mut metadata);
        assert_eq!(metadata["x-request-id"], "req-9");
        assert_eq!(metadata["tracestate"], "a=b");
        let traceparent = metadata["traceparent"].to_str().expect("ascii");
        assert_eq!(
            parse_traceparent(traceparent).map(|p| p.trace_id),
            Some(context.trace.trace_id)
        );
    }
}
