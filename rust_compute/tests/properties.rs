//! Properties of the text analytics and of the request decoders over
//! generated input: arbitrary Unicode (control characters, lone combining
//! marks, characters whose normalisation grows or changes case oddly,
//! CJK, Hangul, emoji sequences) and long repetitions; and arbitrary field
//! values for every request (ids, thresholds with NaN and infinities,
//! huge `top_k`, batches at and beyond the size limit).
//!
//! Nothing may panic; every count must agree with its definition; the
//! similarity measures must behave as similarities. Each property runs a
//! bounded number of cases so the suite stays fast.

use std::collections::{HashMap, HashSet};
use std::iter;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use rust_compute::cancel::Cancellation;
use rust_compute::conversions::{AnalyzeInput, BatchInput, CompareInput, StreamInput};
use rust_compute::error::ComputeError;
use rust_compute::limits::{
    BATCH_TEXT_MAX_BYTES, DOCUMENT_TEXT_MAX_BYTES, DOCUMENTS_MAX, ID_MAX_CHARS, TEXT_MAX_BYTES,
    TOP_K_MAX, VIOLATIONS_REPORTED_MAX,
};
use rust_compute::proto::v1 as pb;
use rust_compute::text::normalize::{is_cjk, is_letter_or_number};
use rust_compute::text::simhash::distance;
use rust_compute::text::{
    DEFAULT_TOP_K, Document, ShingleSet, analyze, compare, find_near_duplicates, jaccard,
    normalise, tokenize,
};
use unicode_segmentation::UnicodeSegmentation;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Characters weighted towards the ones that break text code.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        4 => proptest::char::range(' ', '~'),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => proptest::char::range('\u{7f}', '\u{9f}'),
        2 => proptest::char::range('\u{300}', '\u{36f}'),
        2 => proptest::char::range('\u{4e00}', '\u{9fff}'),
        1 => proptest::char::range('\u{3040}', '\u{30ff}'),
        1 => proptest::char::range('\u{ac00}', '\u{d7a3}'),
        1 => proptest::char::range('\u{1100}', '\u{11ff}'),
        1 => proptest::char::range('\u{1f300}', '\u{1faff}'),
        3 => select(vec![
            '\u{200d}', '\u{fe0f}', '\u{3002}', '\u{ff0e}', '.', '!', '?', '\n', '\r', '\t',
            ' ', '\u{3000}', '\u{a0}', '\u{2028}', '\u{85}', 'ß', 'İ', 'Σ', 'ς', '\u{fb01}',
            '\u{2126}', '\u{ff21}', '\u{1d400}', '\u{fdfa}', '\u{30fb}', '\u{30a0}', '\u{3005}',
            '\u{0}', '\u{feff}', '\u{202e}', '\u{e000}', '\u{10ffff}', '\u{1f1ef}', '\u{1f1f5}',
            '\u{1f3fd}', '٣', '\'', '-', '_', '@', ':',
        ]),
    ]
}

/// Arbitrary text: short mixes, proptest's own strings, and long
/// repetitions of a short piece or of one character.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec(tricky_char(), 0..80).prop_map(String::from_iter),
        1 => any::<String>(),
        1 => (vec(tricky_char(), 1..8), 1..4096_usize)
            .prop_map(|(piece, times)| String::from_iter(piece).repeat(times)),
        1 => (tricky_char(), 0..20_000_usize)
            .prop_map(|(c, times)| iter::repeat_n(c, times).collect()),
    ]
}

/// Text made of few distinct words, so that texts overlap and shingles
/// repeat.
fn wordy_text() -> impl Strategy<Value = String> {
    let words = select(vec![
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "The",
        "CAT",
        "東京",
        "都",
        "に",
        "한국어",
        "🎉",
        "naïve",
        "na\u{ef}ve",
        "nai\u{308}ve",
        "x",
    ]);
    let separators = select(vec![" ", "  ", ", ", ". ", "\n", "。", "-"]);
    vec((words, separators), 0..40).prop_map(|parts| {
        parts
            .into_iter()
            .flat_map(|(word, separator)| [word, separator])
            .collect()
    })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![3 => tricky_text(), 1 => wordy_text()]
}

/// Two texts, often related.
fn text_pair() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        2 => (any_text(), any_text()),
        1 => (wordy_text(), wordy_text()),
        1 => (any_text(), any_text()).prop_map(|(a, tail)| {
            let b = format!("{a} {tail}");
            (a, b)
        }),
    ]
}

fn analysed(text: &str, top_k: usize) -> rust_compute::text::Analysis {
    analyze(text, top_k, &Cancellation::never()).expect("never cancelled")
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn analysis_counts_agree_with_their_definitions(text in any_text(), top_k in 0..=120_usize) {
        let analysis = analysed(&text, top_k);
        prop_assert_eq!(analysis.byte_count, text.len());
        prop_assert!(analysis.char_count <= text.chars().count());
        prop_assert_eq!(analysis.char_count, text.graphemes(true).count());
        let normalised = normalise(&text);
        let terms = tokenize(&normalised).terms;
        prop_assert_eq!(analysis.word_count, terms.len());
        prop_assert!(analysis.line_count <= text.matches('\n').count() + 1);
        prop_assert_eq!(analysis.line_count == 0, text.is_empty());
        if terms.is_empty() {
            prop_assert_eq!(analysis.simhash, 0);
            prop_assert_eq!(analysis.reading_time_seconds, 0);
        }

        let wanted = if top_k == 0 { DEFAULT_TOP_K } else { top_k };
        let mut occurrences: HashMap<&str, u32> = HashMap::new();
        for term in &terms {
            *occurrences.entry(term).or_insert(0) += 1;
        }
        prop_assert!(analysis.top_terms.len() <= wanted);
        prop_assert_eq!(analysis.top_terms.len(), wanted.min(occurrences.len()));
        for term in &analysis.top_terms {
            prop_assert_eq!(Some(&term.count), occurrences.get(term.term.as_str()));
        }
        for pair in analysis.top_terms.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            prop_assert!(
                a.count > b.count || (a.count == b.count && a.term < b.term),
                "{:?} before {:?}", a, b
            );
        }
        // Nothing left out ranks above the last one kept.
        if let Some(last) = analysis.top_terms.last() {
            let kept: HashSet<&str> = analysis.top_terms.iter().map(|t| t.term.as_str()).collect();
            for (term, count) in &occurrences {
                if !kept.contains(term) {
                    prop_assert!(
                        *count < last.count || (*count == last.count && *term > last.term.as_str())
                    );
                }
            }
        }
        prop_assert_eq!(analysed(&text, top_k), analysis, "deterministic");
    }

    #[test]
    fn tokens_are_pieces_of_the_normalised_text(text in any_text()) {
        let normalised = normalise(&text);
        let tokens = tokenize(&normalised);
        prop_assert!(tokens.words <= tokens.terms.len());
        prop_assert!(tokens.cjk_chars <= normalised.chars().count());
        for term in &tokens.terms {
            prop_assert!(!term.is_empty());
            prop_assert!(normalised.contains(term));
            prop_assert!(
                term.chars().any(|c| is_letter_or_number(c) || is_cjk(c)),
                "{:?}", term
            );
        }
    }

    #[test]
    fn jaccard_and_simhash_distance_are_symmetric_similarities((a, b) in text_pair()) {
        let (set_a, set_b) = (ShingleSet::of_text(&a), ShingleSet::of_text(&b));
        let similarity = jaccard(&set_a, &set_b);
        prop_assert!((0.0..=1.0).contains(&similarity), "{}", similarity);
        prop_assert_eq!(similarity.to_bits(), jaccard(&set_b, &set_a).to_bits());
        prop_assert_eq!(jaccard(&set_a, &set_a), 1.0);

        let never = Cancellation::never();
        let forward = compare(&a, &b, &never).expect("never cancelled");
        let backward = compare(&b, &a, &never).expect("never cancelled");
        prop_assert_eq!(forward.jaccard.to_bits(), similarity.to_bits());
        prop_assert_eq!(backward.jaccard.to_bits(), similarity.to_bits());
        prop_assert_eq!(forward.simhash_distance, backward.simhash_distance);
        prop_assert!(forward.simhash_distance <= 64);
        prop_assert_eq!(
            forward.simhash_distance,
            distance(analysed(&a, 0).simhash, analysed(&b, 0).simhash)
        );
        let same = compare(&a, &a, &never).expect("never cancelled");
        prop_assert_eq!((same.jaccard, same.simhash_distance), (1.0, 0));
    }

    #[test]
    fn simhash_distance_is_a_metric(x in any::<u64>(), y in any::<u64>(), z in any::<u64>()) {
        prop_assert_eq!(distance(x, x), 0);
        prop_assert_eq!(distance(x, y), distance(y, x));
        prop_assert!(distance(x, y) <= 64);
        prop_assert_eq!(distance(x, y) == 0, x == y);
        prop_assert!(distance(x, z) <= distance(x, y) + distance(y, z));
    }

    #[test]
    fn near_duplicates_are_verified_and_clustered(
        texts in vec(prop_oneof![3 => wordy_text(), 1 => any_text()], 1..24),
        copies in vec(any::<prop::sample::Index>(), 0..6),
        threshold in prop_oneof![Just(1.0), 0.05..=1.0_f64],
    ) {
        let mut texts = texts;
        for copy in copies {
            let original = copy.get(&texts).clone();
            texts.push(original);
        }
        let documents: Vec<Document> = texts
            .into_iter()
            .enumerate()
            .map(|(index, text)| Document { id: format!("d{index}"), text })
            .collect();
        let sets: HashMap<&str, ShingleSet> = documents
            .iter()
            .map(|d| (d.id.as_str(), ShingleSet::of_text(&d.text)))
            .collect();
        let result = find_near_duplicates(&documents, threshold, &Cancellation::never())
            .expect("small batches fit the caps");

        let mut reported = HashSet::new();
        for pair in &result.pairs {
            prop_assert_ne!(&pair.a, &pair.b);
            let exact = jaccard(&sets[pair.a.as_str()], &sets[pair.b.as_str()]);
            prop_assert_eq!(pair.jaccard.to_bits(), exact.to_bits());
            prop_assert!(exact >= threshold, "{} < {}", exact, threshold);
            let key = if pair.a < pair.b { (&pair.a, &pair.b) } else { (&pair.b, &pair.a) };
            prop_assert!(reported.insert(key), "pair reported twice");
        }
        // Identical non-empty shingle sets have identical signatures, so
        // banding cannot miss them.
        for (i, a) in documents.iter().enumerate() {
            for b in &documents[i + 1..] {
                let (set_a, set_b) = (&sets[a.id.as_str()], &sets[b.id.as_str()]);
                if !set_a.is_empty() && set_a == set_b {
                    let key = if a.id < b.id { (&a.id, &b.id) } else { (&b.id, &a.id) };
                    prop_assert!(reported.contains(&key), "{} ~ {} missed", a.id, b.id);
                }
            }
        }
        // Clusters: disjoint, at least two members, exactly the documents
        // in some pair, each pair inside one cluster.
        let mut cluster_of = HashMap::new();
        for (index, cluster) in result.clusters.iter().enumerate() {
            prop_assert!(cluster.len() >= 2);
            for id in cluster {
                prop_assert!(cluster_of.insert(id.as_str(), index).is_none(), "{} twice", id);
            }
        }
        let paired: HashSet<&str> = result
            .pairs
            .iter()
            .flat_map(|pair| [pair.a.as_str(), pair.b.as_str()])
            .collect();
        prop_assert_eq!(paired.len(), cluster_of.len());
        for pair in &result.pairs {
            prop_assert_eq!(cluster_of.get(pair.a.as_str()), cluster_of.get(pair.b.as_str()));
        }
    }
}

// ---------------------------------------------------------------------------
// Request decoders: any field values either convert or come back as the
// exact field violations the contract names.

/// `(field, rule)` pairs as listed, and the total.
type Listed = (Vec<(String, &'static str)>, usize);

/// The violations of an INVALID_ARGUMENT.
fn violations(error: ComputeError) -> Result<Listed, TestCaseError> {
    match error {
        ComputeError::InvalidArgument {
            violations, total, ..
        } => Ok((
            violations.into_iter().map(|v| (v.field, v.rule)).collect(),
            total,
        )),
        other => Err(TestCaseError::fail(format!(
            "not INVALID_ARGUMENT: {other:?}"
        ))),
    }
}

/// Text sizes around a byte limit, in one- and three-byte characters, or
/// arbitrary text.
fn text_near(limit: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => any_text(),
        1 => (0..=2_usize).prop_map(move |extra| "a".repeat(limit - 1 + extra)),
        1 => (0..=1_usize).prop_map(move |extra| "語".repeat(limit / 3 + extra)),
    ]
}

fn top_k() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), 0..=TOP_K_MAX + 2, Just(u32::MAX)]
}

fn threshold() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        0.0..=1.0_f64,
        select(vec![
            0.0,
            -0.0,
            1.0,
            1.0 + f64::EPSILON,
            f64::MIN_POSITIVE,
            5e-324,
            -1.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
        ]),
    ]
}

/// Ids that collide, are empty, are too long (in characters, not bytes),
/// or are anything at all.
fn document_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec!["a", "b", "", "é", " "]).prop_map(str::to_owned),
        1 => (ID_MAX_CHARS - 1..=ID_MAX_CHARS + 2).prop_map(|n| "語".repeat(n)),
        2 => vec(tricky_char(), 0..ID_MAX_CHARS + 20).prop_map(String::from_iter),
    ]
}

fn document_text() -> impl Strategy<Value = String> {
    prop_oneof![8 => tricky_text(), 1 => text_near(DOCUMENT_TEXT_MAX_BYTES)]
}

fn valid_threshold(threshold: f64) -> bool {
    threshold > 0.0 && threshold <= 1.0
}

/// Every violation a batch should get, counted from the rules themselves.
fn expected_batch_violations(request: &pb::FindNearDuplicatesRequest) -> usize {
    let count = request.documents.len();
    let mut total = usize::from(count == 0) + usize::from(count > DOCUMENTS_MAX);
    let mut seen = HashSet::new();
    for document in &request.documents {
        let chars = document.id.chars().count();
        total += usize::from(chars == 0);
        total += usize::from(chars > ID_MAX_CHARS);
        total += usize::from(document.text.len() > DOCUMENT_TEXT_MAX_BYTES);
        total += usize::from(!seen.insert(document.id.as_str()));
    }
    total + usize::from(!valid_threshold(request.threshold))
}

/// Checks a batch's conversion against the rules.
fn check_batch(request: pb::FindNearDuplicatesRequest) -> Result<(), TestCaseError> {
    let expected = expected_batch_violations(&request);
    let count = request.documents.len();
    let bytes: usize = request.documents.iter().map(|d| d.text.len()).sum();
    let original = request.clone();
    match BatchInput::try_from(request) {
        Ok(input) => {
            prop_assert_eq!(expected, 0);
            prop_assert!(bytes <= BATCH_TEXT_MAX_BYTES);
            prop_assert_eq!(input.text_bytes, bytes);
            prop_assert_eq!(input.threshold.to_bits(), original.threshold.to_bits());
            prop_assert_eq!(input.documents.len(), count);
            for (got, sent) in input.documents.iter().zip(&original.documents) {
                prop_assert_eq!((&got.id, &got.text), (&sent.id, &sent.text));
            }
        }
        Err(ComputeError::BatchTooLarge { bytes: told, limit }) => {
            prop_assert_eq!(expected, 0);
            prop_assert_eq!((told, limit), (bytes, BATCH_TEXT_MAX_BYTES));
        }
        Err(error) => {
            let (listed, total) = violations(error)?;
            prop_assert_eq!(total, expected);
            prop_assert_eq!(listed.len(), total.min(VIOLATIONS_REPORTED_MAX));
            for (field, rule) in &listed {
                let known = match field.as_str() {
                    "documents" => ["repeated.min_items", "repeated.max_items"].contains(rule),
                    "threshold" => *rule == "double.gt_lte",
                    path => {
                        let index: Option<usize> = path
                            .strip_prefix("documents[")
                            .and_then(|rest| rest.split_once(']'))
                            .and_then(|(index, _)| index.parse().ok());
                        index.is_some_and(|index| index < count)
                            && (path.ends_with("].id") || path.ends_with("].text"))
                    }
                };
                prop_assert!(known, "{} {}", field, rule);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn analyze_requests_convert_or_name_their_violations(
        text in text_near(TEXT_MAX_BYTES),
        top_k in top_k(),
    ) {
        let text_ok = text.len() <= TEXT_MAX_BYTES;
        let top_k_ok = top_k <= TOP_K_MAX;
        let request = pb::AnalyzeRequest { text: text.clone(), top_k };
        match AnalyzeInput::try_from(request) {
            Ok(input) => {
                prop_assert!(text_ok && top_k_ok);
                prop_assert_eq!(input.text, text);
                prop_assert_eq!(input.top_k, top_k as usize);
            }
            Err(error) => {
                let (listed, total) = violations(error)?;
                let mut want = Vec::new();
                if !text_ok {
                    want.push(("text".to_owned(), "string.max_bytes"));
                }
                if !top_k_ok {
                    want.push(("top_k".to_owned(), "uint32.lte"));
                }
                prop_assert_eq!(total, want.len());
                prop_assert_eq!(listed, want);
            }
        }
    }

    #[test]
    fn compare_requests_convert_or_name_their_violations(
        a in text_near(TEXT_MAX_BYTES),
        b in text_near(TEXT_MAX_BYTES),
    ) {
        let request = pb::CompareRequest { a: a.clone(), b: b.clone() };
        let mut want = Vec::new();
        for (field, text) in [("a", &a), ("b", &b)] {
            if text.len() > TEXT_MAX_BYTES {
                want.push((field.to_owned(), "string.max_bytes"));
            }
        }
        match CompareInput::try_from(request) {
            Ok(input) => {
                prop_assert!(want.is_empty());
                prop_assert_eq!((input.a, input.b), (a, b));
            }
            Err(error) => prop_assert_eq!(violations(error)?, (want.clone(), want.len())),
        }
    }

    #[test]
    fn stream_requests_convert_or_name_the_request(
        id in document_id(),
        text in text_near(TEXT_MAX_BYTES),
        top_k in top_k(),
    ) {
        let id_ok = id.chars().count() <= ID_MAX_CHARS;
        let ok = id_ok && text.len() <= TEXT_MAX_BYTES && top_k <= TOP_K_MAX;
        let request = pb::AnalyzeStreamRequest { id: id.clone(), text, top_k };
        match StreamInput::try_from(request) {
            Ok(input) => {
                prop_assert!(ok);
                prop_assert_eq!(input.id, id);
            }
            Err(ComputeError::InvalidArgument { request_id, violations, .. }) => {
                prop_assert!(!ok);
                prop_assert!(!violations.is_empty());
                let named: String = id.chars().take(ID_MAX_CHARS).collect();
                prop_assert_eq!(request_id, Some(named));
                prop_assert_eq!(
                    violations.iter().any(|v| v.field == "id"),
                    !id_ok
                );
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
    }

    #[test]
    fn batches_convert_or_name_their_violations(
        documents in vec((document_id(), document_text()), 0..40),
        threshold in threshold(),
    ) {
        let documents = documents
            .into_iter()
            .map(|(id, text)| pb::Document { id, text })
            .collect();
        check_batch(pb::FindNearDuplicatesRequest { documents, threshold })?;
    }
}

proptest! {
    // Batches around the 100,000-document limit: few cases, each is big.
    #![proptest_config(config(12))]

    #[test]
    fn batches_at_the_document_limit(
        count in DOCUMENTS_MAX - 2..=DOCUMENTS_MAX + 2,
        duplicates in vec(any::<prop::sample::Index>(), 0..3),
        threshold in threshold(),
    ) {
        let mut documents: Vec<pb::Document> = (0..count)
            .map(|i| pb::Document { id: i.to_string(), text: String::new() })
            .collect();
        for duplicate in duplicates {
            let at = duplicate.index(count);
            documents[at].id = "0".to_owned();
        }
        check_batch(pb::FindNearDuplicatesRequest { documents, threshold })?;
    }
}
