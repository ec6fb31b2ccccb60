//! The transcript as tokens: words (lower-cased, abbreviations such as
//! "b.i.d." without their dots), numbers (written in digits or spoken in
//! words, "one hundred forty" and "two point five" included) and punctuation,
//! each with its byte range in the text. Extraction matches on tokens, so a
//! spoken number and a written one look the same to every pattern.

use std::sync::LazyLock;

use regex::Regex;

/// One token and where it is in the text (byte offsets).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A word, a number or a punctuation mark.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    /// A word, lower-cased (`bid` for "b.i.d.").
    Word(String),
    /// A number; `digits` is its integer digits as written ("0412") or
    /// spoken one by one, for identifier checks.
    Number {
        /// Its value.
        value: f64,
        /// The digits of an integer (None for a fraction).
        digits: Option<String>,
        /// Whether it was spoken in words.
        spoken: bool,
    },
    /// Any other visible character; `\n` for a line break.
    Punct(char),
}

impl Token {
    /// The word, if this is one.
    pub fn word(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Word(w) => Some(w),
            _ => None,
        }
    }

    /// The value, if this is a number.
    pub fn number(&self) -> Option<f64> {
        match self.kind {
            TokenKind::Number { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Whether this is the word `w`.
    pub fn is(&self, w: &str) -> bool {
        self.word() == Some(w)
    }

    /// Whether this ends a clause: `.`, `;`, `!`, `?`, a line break.
    pub fn ends_sentence(&self) -> bool {
        matches!(self.kind, TokenKind::Punct('.' | ';' | '!' | '?' | '\n'))
    }
}

static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(
        r"(?x)
        (?P<abbr>(?:[A-Za-z]\.){2,})
        | (?P<num>\d+(?:,\d{3})*(?:\.\d+)?)
        | (?P<word>\p{L}[\p{L}\p{M}']*)
        | (?P<nl>\n)
        | (?P<punct>[^\s\p{L}\d])",
    )
    .expect("the token pattern is valid")
});

/// The tokens of `text`, spoken numbers merged into number tokens.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut raw = Vec::new();
    for caps in TOKEN.captures_iter(text) {
        let Some(m) = caps.get(0) else { continue };
        let kind = if caps.name("abbr").is_some() {
            TokenKind::Word(m.as_str().replace('.', "").to_lowercase())
        } else if caps.name("num").is_some() {
            let plain = m.as_str().replace(',', "");
            let Ok(value) = plain.parse::<f64>() else {
                continue;
            };
            TokenKind::Number {
                value,
                digits: (!plain.contains('.')).then_some(plain),
                spoken: false,
            }
        } else if caps.name("word").is_some() {
            TokenKind::Word(m.as_str().to_lowercase().replace('\'', ""))
        } else if caps.name("nl").is_some() {
            TokenKind::Punct('\n')
        } else {
            TokenKind::Punct(m.as_str().chars().next().unwrap_or(' '))
        };
        raw.push(Token {
            kind,
            start: m.start(),
            end: m.end(),
        });
    }
    merge_numbers(raw)
}

/// The value of a number word and what kind of word it is.
fn number_word(word: &str) -> Option<(u64, Place)> {
    const UNITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    const TEENS: [&str; 10] = [
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(i) = UNITS.iter().position(|u| *u == word) {
        return Some((i as u64, Place::Unit));
    }
    if let Some(i) = TEENS.iter().position(|u| *u == word) {
        return Some((10 + i as u64, Place::Teen));
    }
    if word == "fourty" {
        return Some((40, Place::Tens));
    }
    if let Some(i) = TENS.iter().position(|u| *u == word) {
        return Some((20 + 10 * i as u64, Place::Tens));
    }
    match word {
        "hundred" => Some((100, Place::Hundred)),
        "thousand" => Some((1000, Place::Thousand)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Unit,
    Teen,
    Tens,
    Hundred,
    Thousand,
}

/// A spoken number starting at `tokens[at]`: its value and how many tokens
/// it takes. Digits said one by one ("one two three") are separate numbers.
fn spoken_number(tokens: &[Token], at: usize) -> Option<(f64, usize)> {
    let mut total = 0u64;
    let mut group = 0u64;
    let mut last: Option<Place> = None;
    let mut i = at;
    while let Some(word) = tokens.get(i).and_then(Token::word) {
        if word == "and" && matches!(last, Some(Place::Hundred | Place::Thousand)) {
            // "one hundred and forty"
            if tokens
                .get(i + 1)
                .and_then(Token::word)
                .and_then(number_word)
                .is_some_and(|(_, p)| p != Place::Hundred && p != Place::Thousand)
            {
                i += 1;
                continue;
            }
            break;
        }
        let Some((value, place)) = number_word(word) else {
            break;
        };
        let fits = match place {
            Place::Unit => match last {
                None | Some(Place::Hundred | Place::Thousand) => true,
                Some(Place::Tens) => group.is_multiple_of(10),
                _ => false,
            },
            Place::Teen | Place::Tens => {
                matches!(last, None | Some(Place::Hundred | Place::Thousand))
            }
            Place::Hundred => matches!(last, Some(Place::Unit | Place::Teen)) && group < 100,
            Place::Thousand => last.is_some() && last != Some(Place::Thousand) && total == 0,
        };
        if !fits {
            break;
        }
        match place {
            Place::Hundred => group *= 100,
            Place::Thousand => {
                total += group * 1000;
                group = 0;
            }
            _ => group += value,
        }
        last = Some(place);
        i += 1;
    }
    if i == at {
        return None;
    }
    let mut number = (total + group) as f64;
    // "two point five", "thirty eight point six"
    if tokens.get(i).is_some_and(|t| t.is("point")) {
        let mut scale = 0.1;
        let mut j = i + 1;
        while let Some((digit, Place::Unit)) =
            tokens.get(j).and_then(Token::word).and_then(number_word)
        {
            number += digit as f64 * scale;
            scale /= 10.0;
            j += 1;
        }
        if j > i + 1 {
            number = (number * 1e6).round() / 1e6;
            i = j;
        }
    }
    Some((number, i - at))
}

/// "and a half" after a number: its length in tokens.
fn and_a_half(tokens: &[Token], at: usize) -> Option<usize> {
    let words: Vec<&str> = tokens
        .get(at..at + 3)?
        .iter()
        .filter_map(Token::word)
        .collect();
    (words.len() == 3 && words[0] == "and" && matches!(words[1], "a" | "one") && words[2] == "half")
        .then_some(3)
}

fn merge_numbers(raw: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let (mut value, mut len, spoken) = match raw[i].kind {
            TokenKind::Number { value, .. } => (value, 1, false),
            _ => match spoken_number(&raw, i) {
                Some((value, len)) => (value, len, true),
                None => {
                    out.push(raw[i].clone());
                    i += 1;
                    continue;
                }
            },
        };
        if let Some(extra) = and_a_half(&raw, i + len) {
            value += 0.5;
            len += extra;
        }
        let end = raw[i + len - 1].end;
        let digits = if value.fract() == 0.0 {
            match &raw[i].kind {
                TokenKind::Number { digits, .. } if len == 1 => digits.clone(),
                _ => Some(format!("{value}")),
            }
        } else {
            None
        };
        out.push(Token {
            kind: TokenKind::Number {
                value,
                digits,
                spoken,
            },
            start: raw[i].start,
            end,
        });
        i += len;
    }
    out
}

/// Converts byte offsets of one text to offsets in Unicode code points.
#[derive(Debug)]
pub struct CodePoints {
    /// The code-point index of each byte that starts a character, and of the end.
    starts: Vec<(usize, usize)>,
}

impl CodePoints {
    /// The table for `text`.
    pub fn new(text: &str) -> Self {
        let mut starts: Vec<(usize, usize)> = text
            .char_indices()
            .enumerate()
            .map(|(c, (b, _))| (b, c))
            .collect();
        starts.push((text.len(), starts.len()));
        Self { starts }
    }

    /// The code-point offset of byte `byte` (a character boundary).
    pub fn at(&self, byte: usize) -> usize {
        match self.starts.binary_search_by_key(&byte, |(b, _)| *b) {
            Ok(i) => self.starts[i].1,
            Err(i) => self.starts.get(i).map_or(0, |(_, c)| *c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(text: &str) -> Vec<f64> {
        tokenize(text).iter().filter_map(Token::number).collect()
    }

    #[test]
    fn spoken_numbers_are_numbers() {
        let cases: &[(&str, &[f64])] = &[
            ("eighty one milligrams", &[81.0]),
            ("one hundred forty over ninety", &[140.0, 90.0]),
            ("one hundred and forty over ninety", &[140.0, 90.0]),
            ("two point five mg", &[2.5]),
            ("thirty eight point six degrees", &[38.6]),
            ("one and a half tablets", &[1.5]),
            ("2 and a half", &[2.5]),
            ("fifteen hundred", &[1500.0]),
            ("two thousand five hundred", &[2500.0]),
            ("1,000 mg and 2.5 mg", &[1000.0, 2.5]),
            ("one two three", &[1.0, 2.0, 3.0]),
            ("twenty twenty six", &[20.0, 26.0]),
            ("ninety nine", &[99.0]),
            ("no numbers here", &[]),
        ];
        for (text, expected) in cases {
            assert_eq!(numbers(text), *expected, "{text}");
        }
    }

    #[test]
    fn abbreviations_lose_their_dots_and_spans_cover_the_spoken_words() {
        let text = "Aspirin eighty one mg b.i.d. p.o.";
        let tokens = tokenize(text);
        let words: Vec<&str> = tokens.iter().filter_map(Token::word).collect();
        assert_eq!(words, ["aspirin", "mg", "bid", "po"]);
        let number = &tokens[1];
        assert_eq!(&text[number.start..number.end], "eighty one");
    }

    #[test]
    fn code_points_count_characters_not_bytes() {
        let text = "café 5 mg";
        let points = CodePoints::new(text);
        let five = text.find('5').unwrap();
        assert_eq!(points.at(five), 5);
        assert_eq!(points.at(text.len()), 9);
    }
}
