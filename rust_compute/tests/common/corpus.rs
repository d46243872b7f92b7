//! Synthetic near-duplicate batches, shared by the black-box tests and the
//! benchmark example (which includes this file by path).
//!
//! Deterministic: the same arguments always give the same documents.

/// A batch as `(id, text)` pairs, and the `(original id, copy id)` of every
/// planted near-duplicate.
pub struct Corpus {
    pub documents: Vec<(String, String)>,
    pub planted: Vec<(String, String)>,
}

/// `count` documents of exactly `chars` characters of lowercase
/// pseudo-words; one in `1 / duplicate_every` is a copy of an earlier
/// document with one word replaced (shingle Jaccard about 0.87 with it
/// at 300 characters).
pub fn corpus(count: usize, chars: usize, duplicate_every: usize, seed: u64) -> Corpus {
    let mut random = Random(seed);
    let vocabulary: Vec<String> = (0..20_000).map(|_| random.word()).collect();
    let words_needed = chars / 4 + 2;
    let mut originals: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut documents = Vec::with_capacity(count);
    let mut planted = Vec::new();
    for index in 0..count {
        let words = if !originals.is_empty() && random.below(duplicate_every) == 0 {
            let (original, words) = &originals[random.below(originals.len())];
            planted.push((id(*original), id(index)));
            let mut copy = words.clone();
            // Early in the text, so the change survives the cut to `chars`,
            // and with a word of the same length, so the cut falls in the
            // same place and only the three shingles over the word differ.
            let position = random.below(copy.len().min(20));
            let len = vocabulary[copy[position]].len();
            copy[position] = loop {
                let other = random.below(vocabulary.len());
                if other != copy[position] && vocabulary[other].len() == len {
                    break other;
                }
            };
            copy
        } else {
            let words: Vec<usize> = (0..words_needed)
                .map(|_| random.below(vocabulary.len()))
                .collect();
            originals.push((index, words.clone()));
            words
        };
        let mut text = String::with_capacity(chars + 16);
        for word in words {
            if text.len() >= chars {
                break;
            }
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&vocabulary[word]);
        }
        text.truncate(chars);
        while text.len() < chars {
            text.push('.');
        }
        documents.push((id(index), text));
    }
    Corpus { documents, planted }
}

/// Ids sort like their indices.
fn id(index: usize) -> String {
    format!("doc-{index:06}")
}

/// splitmix64: tiny, fast and good enough for test data.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn word(&mut self) -> String {
        let len = 3 + self.below(7);
        (0..len)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}
