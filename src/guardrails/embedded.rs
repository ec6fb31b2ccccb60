//! The embedded extraction engine: lexicon and patterns over the tokens of
//! the text, offline and deterministic. It finds the terms of the lexicon
//! (longest phrase first), sets aside those a negation rules out ("denies
//! taking ibuprofen", "no signs of sepsis") or an allergy statement claims,
//! and reads what is said around each: a medication's dose, frequency,
//! route and status, a vital sign's value, a time expression's date.

use time::{Date, Duration, Month};

use super::lexicon::{Lexicon, Term};
use super::model::{
    Allergy, Condition, Extracted, Medication, MedicationStatus, Span, TimeExpression, VitalSign,
};
use super::text::{CodePoints, Token, TokenKind, tokenize};

/// A phrase of the lexicon found in the text: tokens `start..end`.
#[derive(Debug, Clone)]
struct Mention {
    start: usize,
    end: usize,
    terms: Vec<Term>,
}

impl Mention {
    fn drug(&self) -> Option<usize> {
        self.terms.iter().find_map(|t| match t {
            Term::Drug(d) => Some(*d),
            _ => None,
        })
    }
}

/// The text being read: its tokens and how to report spans.
struct Reading<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    points: CodePoints,
}

impl Reading<'_> {
    fn word(&self, i: usize) -> Option<&str> {
        self.tokens.get(i).and_then(Token::word)
    }

    fn number(&self, i: usize) -> Option<f64> {
        self.tokens.get(i).and_then(Token::number)
    }

    /// Whether the words at `i` are `words` (numbers never match).
    fn words_at(&self, i: usize, words: &[&str]) -> bool {
        words
            .iter()
            .enumerate()
            .all(|(k, w)| self.word(i + k) == Some(*w))
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span {
            start: self.points.at(self.tokens[start].start),
            end: self.points.at(self.tokens[end - 1].end),
        }
    }

    fn said(&self, start: usize, end: usize) -> String {
        self.text[self.tokens[start].start..self.tokens[end - 1].end].to_owned()
    }

    fn ends_clause(&self, i: usize) -> bool {
        self.tokens.get(i).is_none_or(|t| {
            t.ends_sentence() || t.word().is_some_and(|w| CLAUSE_BREAKS.contains(&w))
        })
    }
}

/// Words after which a negation no longer reaches.
const CLAUSE_BREAKS: [&str; 14] = [
    "but", "however", "although", "though", "except", "apart", "aside", "whereas", "which", "who",
    "given", "because", "due", "since",
];

/// Words that negate what follows them in the clause.
const NEGATIONS: [&str; 20] = [
    "no", "not", "denies", "denied", "deny", "denying", "never", "without", "nor", "negative",
    "free", "absent", "absence", "refuses", "refused", "declined", "declines", "avoid", "avoids",
    "nil",
];

/// Words after a term that negate it ("sepsis was ruled out").
const NEGATIONS_AFTER: [&str; 4] = ["excluded", "unlikely", "negative", "absent"];

const STOP_WORDS: [&str; 15] = [
    "stop",
    "stopped",
    "stopping",
    "stops",
    "discontinue",
    "discontinued",
    "discontinuing",
    "cease",
    "ceased",
    "held",
    "hold",
    "withhold",
    "withheld",
    "quit",
    "off",
];
const START_WORDS: [&str; 28] = [
    "start",
    "started",
    "starting",
    "starts",
    "commence",
    "commenced",
    "commencing",
    "initiate",
    "initiated",
    "begin",
    "began",
    "prescribe",
    "prescribed",
    "add",
    "added",
    "give",
    "given",
    "gave",
    "new",
    "resume",
    "resumed",
    "restart",
    "restarted",
    "adding",
    "plan",
    "try",
    "trial",
    "switch",
];
const CONTINUE_WORDS: [&str; 14] = [
    "continue",
    "continued",
    "continues",
    "continuing",
    "remain",
    "remains",
    "on",
    "take",
    "takes",
    "taking",
    "uses",
    "using",
    "increase",
    "increased",
];
/// Words after a medication that say it was stopped or started.
const STOPPED_AFTER: [&str; 6] = [
    "stopped",
    "discontinued",
    "ceased",
    "held",
    "withheld",
    "suspended",
];
const STARTED_AFTER: [&str; 6] = [
    "started",
    "commenced",
    "initiated",
    "restarted",
    "resumed",
    "added",
];

/// Reads `text`, dated `on` (the recording's day).
pub fn extract(lexicon: &Lexicon, text: &str, on: Date) -> Extracted {
    let reading = Reading {
        text,
        tokens: tokenize(text),
        points: CodePoints::new(text),
    };
    let mentions = find_mentions(lexicon, &reading);
    let mut claimed = vec![false; mentions.len()];
    let (allergies, no_known_allergies) = allergies(lexicon, &reading, &mentions, &mut claimed);
    let mut medications = Vec::new();
    let mut conditions = Vec::new();
    for (m, mention) in mentions.iter().enumerate() {
        if claimed[m] || negated(&reading, mention.start, mention.end) {
            continue;
        }
        if let Some(drug) = mention.drug() {
            let next = mentions
                .get(m + 1)
                .map_or(reading.tokens.len(), |n| n.start);
            medications.push(medication(lexicon, &reading, mention, drug, next));
        } else if let Some(Term::Condition(c)) = mention
            .terms
            .iter()
            .find(|t| matches!(t, Term::Condition(_)))
        {
            conditions.push(Condition {
                text: reading.said(mention.start, mention.end),
                name: lexicon.conditions[*c].id.clone(),
                span: Some(reading.span(mention.start, mention.end)),
            });
        }
    }
    Extracted {
        medications,
        allergies,
        no_known_allergies,
        conditions,
        vital_signs: vital_signs(&reading),
        times: times(&reading, on),
    }
}

fn find_mentions(lexicon: &Lexicon, reading: &Reading<'_>) -> Vec<Mention> {
    let mut mentions = Vec::new();
    let mut i = 0;
    while i < reading.tokens.len() {
        let found = lexicon.terms_at(&reading.tokens, i);
        match found.first() {
            Some(&(_, longest)) => {
                let terms = found
                    .iter()
                    .filter(|(_, len)| *len == longest)
                    .map(|(t, _)| *t)
                    .collect();
                mentions.push(Mention {
                    start: i,
                    end: i + longest,
                    terms,
                });
                i += longest;
            }
            None => i += 1,
        }
    }
    mentions
}

/// Whether a negation reaches the term at tokens `start..end`.
fn negated(reading: &Reading<'_>, start: usize, end: usize) -> bool {
    let mut words = 0;
    let mut i = start;
    while i > 0 && words < 8 {
        i -= 1;
        if reading.ends_clause(i) {
            break;
        }
        let Some(word) = reading.word(i) else {
            continue;
        };
        words += 1;
        if START_WORDS.contains(&word)
            || CONTINUE_WORDS.contains(&word)
            || STOP_WORDS.contains(&word)
        {
            // "denies chest pain, takes aspirin": the verb starts a new
            // statement, unless it is itself negated ("denies taking").
            return verb_negated(reading, i);
        }
        if word == "no"
            && reading.word(i + 1).is_some_and(|w| {
                matches!(w, "longer" | "change" | "changes" | "increase" | "decrease")
            })
        {
            return false;
        }
        if NEGATIONS.contains(&word)
            || (word == "out" && i > 0 && reading.word(i - 1) == Some("ruled"))
        {
            return true;
        }
    }
    (end..end + 4)
        .take_while(|&j| !reading.ends_clause(j))
        .any(|j| {
            reading.word(j).is_some_and(|w| {
                NEGATIONS_AFTER.contains(&w) || (w == "ruled" && reading.word(j + 1) == Some("out"))
            })
        })
}

/// Whether the verb at token `verb` is negated ("denies taking", "not
/// on", "never took"; "no longer taking" is a stop, not a negation).
fn verb_negated(reading: &Reading<'_>, verb: usize) -> bool {
    let before: Vec<&str> = (verb.saturating_sub(3)..verb)
        .rev()
        .take_while(|&k| !reading.ends_clause(k))
        .filter_map(|k| reading.word(k))
        .filter(|w| {
            !matches!(
                *w,
                "is" | "was" | "been" | "currently" | "be" | "has" | "have" | "had"
            )
        })
        .take(2)
        .collect();
    !before.contains(&"longer") && before.iter().any(|w| NEGATIONS.contains(w))
}

/// The allergies stated, and whether the text says there are none. The
/// mentions an allergy statement names are claimed (not medications).
fn allergies(
    lexicon: &Lexicon,
    reading: &Reading<'_>,
    mentions: &[Mention],
    claimed: &mut [bool],
) -> (Vec<Allergy>, bool) {
    let mut found = Vec::new();
    let mut none_known = false;
    let allergy_word = |w: &str| matches!(w, "allergy" | "allergies" | "allergic");
    for i in 0..reading.tokens.len() {
        let Some(word) = reading.word(i) else {
            continue;
        };
        if matches!(word, "nkda" | "nka")
            || reading.words_at(i, &["no", "known", "allergies"])
            || reading.words_at(i, &["no", "known", "drug", "allergies"])
            || reading.words_at(i, &["no", "allergies"])
            || reading.words_at(i, &["denies", "allergies"])
            || reading.words_at(i, &["denies", "any", "allergies"])
        {
            none_known = true;
        }
        // "allergic to X, Y and Z", "allergies: X", "allergy to X", "hypersensitivity to X"
        let list_start = if reading.words_at(i, &["allergic", "reaction", "to"]) {
            Some(i + 3)
        } else if ((allergy_word(word)
            || matches!(word, "hypersensitivity" | "anaphylaxis" | "intolerant"))
            && reading
                .word(i + 1)
                .is_some_and(|w| matches!(w, "to" | "of" | "include" | "including")))
            || (allergy_word(word)
                && matches!(
                    reading.tokens.get(i + 1).map(|t| &t.kind),
                    Some(TokenKind::Punct(':' | '-'))
                ))
        {
            Some(i + 2)
        } else {
            None
        };
        if let Some(at) = list_start
            && reading
                .word(at)
                .is_some_and(|w| matches!(w, "none" | "nil" | "nkda"))
        {
            none_known = true;
        }
        if let Some(mut at) = list_start {
            // "not allergic to penicillin": the list is named, and no allergy.
            let negated_statement = negated(reading, i, i + 1);
            for (m, mention) in mentions.iter().enumerate() {
                if mention.start < at {
                    continue;
                }
                // Between list items only separators may stand.
                let gap_ok = (at..mention.start).all(|g| match &reading.tokens[g].kind {
                    TokenKind::Punct(',' | '/' | '&') => true,
                    TokenKind::Word(w) => matches!(
                        w.as_str(),
                        "and" | "or" | "also" | "the" | "a" | "an" | "all"
                    ),
                    _ => false,
                });
                if !gap_ok {
                    break;
                }
                claimed[m] = true;
                if !negated_statement && let Some(allergy) = allergy_of(lexicon, reading, mention) {
                    found.push(allergy);
                }
                at = mention.end;
            }
        }
        // "penicillin allergy", "sulfa allergic"
        if allergy_word(word)
            && let Some(m) = mentions.iter().position(|m| m.end == i)
            && !claimed[m]
        {
            claimed[m] = true;
            if !negated(reading, mentions[m].start, mentions[m].end)
                && let Some(allergy) = allergy_of(lexicon, reading, &mentions[m])
            {
                found.push(allergy);
            }
        }
    }
    let none_known = none_known && found.is_empty();
    (found, none_known)
}

fn allergy_of(lexicon: &Lexicon, reading: &Reading<'_>, mention: &Mention) -> Option<Allergy> {
    let substance = mention.terms.iter().find_map(|t| match t {
        Term::Allergen(a) => Some(lexicon.allergens[*a].id.clone()),
        _ => None,
    });
    let substance = substance.or_else(|| {
        mention.terms.iter().find_map(|t| match t {
            Term::Drug(d) => Some(lexicon.drugs[*d].generic.clone()),
            Term::Class(c) => Some(lexicon.classes[*c].id.clone()),
            _ => None,
        })
    })?;
    Some(Allergy {
        text: reading.said(mention.start, mention.end),
        substance,
        span: Some(reading.span(mention.start, mention.end)),
    })
}

fn medication(
    lexicon: &Lexicon,
    reading: &Reading<'_>,
    mention: &Mention,
    drug: usize,
    next_mention: usize,
) -> Medication {
    let mut last = mention.end;
    let window_end = (mention.end..next_mention.min(mention.end + 14))
        .find(|&j| reading.tokens[j].ends_sentence())
        .unwrap_or(next_mention.min(mention.end + 14));
    let mut dose = None;
    let mut frequency = None;
    let mut route = None;
    let mut i = mention.end;
    while i < window_end {
        if dose.is_none()
            && let Some((amount, unit, len)) = dose_at(reading, i)
        {
            dose = Some((amount, unit));
            i += len;
            last = i;
            continue;
        }
        if frequency.is_none()
            && let Some((label, per_day, len)) = frequency_at(reading, i)
        {
            frequency = Some((label, per_day));
            i += len;
            last = i;
            continue;
        }
        if route.is_none()
            && let Some((name, len)) = route_at(reading, i)
        {
            route = Some(name);
            i += len;
            last = i;
            continue;
        }
        i += 1;
    }
    let mut first = mention.start;
    // "81 mg aspirin", "500 milligrams of amoxicillin"
    if dose.is_none() {
        for back in [2usize, 3] {
            if mention.start >= back
                && let Some((amount, unit, len)) = dose_at(reading, mention.start - back)
                && (mention.start - back + len == mention.start
                    || (mention.start - back + len + 1 == mention.start
                        && reading.word(mention.start - 1) == Some("of")))
            {
                dose = Some((amount, unit));
                first = mention.start - back;
                break;
            }
        }
    }
    Medication {
        text: reading.said(mention.start, mention.end),
        generic: lexicon.drugs[drug].generic.clone(),
        dose: dose.as_ref().map(|d| d.0),
        unit: dose.map(|d| d.1.to_owned()),
        frequency: frequency.as_ref().map(|f| f.0.clone()),
        per_day: frequency.and_then(|f| f.1),
        route: route.map(str::to_owned),
        status: status(reading, mention, last, next_mention),
        span: Some(reading.span(first, last)),
    }
}

/// A dose at token `i`: the amount, its unit and the tokens it takes.
fn dose_at(reading: &Reading<'_>, i: usize) -> Option<(f64, &'static str, usize)> {
    let amount = reading.number(i)?;
    let unit = match reading.word(i + 1)? {
        "mg" | "mgs" | "milligram" | "milligrams" | "milligramme" | "milligrammes" => "mg",
        "mcg" | "microgram" | "micrograms" | "ug" | "µg" => "mcg",
        "g" | "gm" | "gram" | "grams" | "gramme" | "grammes" => "g",
        "unit" | "units" | "iu" => "units",
        "international" if reading.word(i + 2) == Some("units") => {
            return Some((amount, "units", 3));
        }
        "ml" | "mls" | "millilitre" | "millilitres" | "milliliter" | "milliliters" => "ml",
        "tablet" | "tablets" | "tab" | "tabs" | "pill" | "pills" | "capsule" | "capsules" => {
            "tablet"
        }
        "puff" | "puffs" => "puff",
        _ => return None,
    };
    Some((amount, unit, 2))
}

/// A frequency at token `i`: its label, administrations a day, tokens taken.
fn frequency_at(reading: &Reading<'_>, i: usize) -> Option<(String, Option<f64>, usize)> {
    const FIXED: [(&[&str], &str, f64); 36] = [
        (&["once", "a", "day"], "once daily", 1.0),
        (&["once", "per", "day"], "once daily", 1.0),
        (&["once", "daily"], "once daily", 1.0),
        (&["every", "day"], "once daily", 1.0),
        (&["each", "day"], "once daily", 1.0),
        (&["a", "day"], "once daily", 1.0),
        (&["daily"], "once daily", 1.0),
        (&["qd"], "once daily", 1.0),
        (&["od"], "once daily", 1.0),
        (&["twice", "a", "day"], "twice daily", 2.0),
        (&["twice", "per", "day"], "twice daily", 2.0),
        (&["twice", "daily"], "twice daily", 2.0),
        (&["bid"], "twice daily", 2.0),
        (&["bd"], "twice daily", 2.0),
        (&["tid"], "three times daily", 3.0),
        (&["tds"], "three times daily", 3.0),
        (&["qid"], "four times daily", 4.0),
        (&["qds"], "four times daily", 4.0),
        (&["at", "night"], "at night", 1.0),
        (&["at", "bedtime"], "at night", 1.0),
        (&["nightly"], "at night", 1.0),
        (&["every", "night"], "at night", 1.0),
        (&["nocte"], "at night", 1.0),
        (&["qhs"], "at night", 1.0),
        (&["in", "the", "morning"], "in the morning", 1.0),
        (&["every", "morning"], "in the morning", 1.0),
        (&["mane"], "in the morning", 1.0),
        (&["once", "a", "week"], "weekly", 1.0 / 7.0),
        (&["once", "weekly"], "weekly", 1.0 / 7.0),
        (&["every", "week"], "weekly", 1.0 / 7.0),
        (&["weekly"], "weekly", 1.0 / 7.0),
        (&["twice", "a", "week"], "twice weekly", 2.0 / 7.0),
        (&["twice", "weekly"], "twice weekly", 2.0 / 7.0),
        (&["every", "other", "day"], "every other day", 0.5),
        (&["monthly"], "monthly", 1.0 / 30.0),
        (&["stat"], "once", 1.0),
    ];
    const AS_NEEDED: [&[&str]; 5] = [
        &["as", "needed"],
        &["as", "required"],
        &["when", "required"],
        &["prn"],
        &["as", "necessary"],
    ];
    // "every 6 hours", "every four to six hours", "q6h"
    if reading.words_at(i, &["every"])
        && let Some(n) = reading.number(i + 1)
    {
        let (len, hours) = if reading.word(i + 2) == Some("to") && reading.number(i + 3).is_some() {
            (4, n)
        } else {
            (2, n)
        };
        if matches!(reading.word(i + len), Some("hours" | "hour" | "hourly")) && hours > 0.0 {
            return Some((format!("every {hours} hours"), Some(24.0 / hours), len + 1));
        }
    }
    if reading.words_at(i, &["q"])
        && let Some(hours) = reading.number(i + 1)
        && matches!(reading.word(i + 2), Some("h" | "hr" | "hrly" | "hourly"))
        && hours > 0.0
    {
        return Some((format!("every {hours} hours"), Some(24.0 / hours), 3));
    }
    // "three times a day", "2 times daily"
    if let Some(n) = reading.number(i)
        && reading.word(i + 1) == Some("times")
    {
        if reading.word(i + 2) == Some("daily") {
            return Some((format!("{n} times daily"), Some(n), 3));
        }
        if matches!(reading.word(i + 2), Some("a" | "per" | "each"))
            && reading.word(i + 3) == Some("day")
        {
            return Some((format!("{n} times daily"), Some(n), 4));
        }
    }
    for words in AS_NEEDED {
        if reading.words_at(i, words) {
            return Some(("as needed".to_owned(), None, words.len()));
        }
    }
    FIXED
        .iter()
        .find(|(words, _, _)| reading.words_at(i, words))
        .map(|(words, label, per_day)| ((*label).to_owned(), Some(*per_day), words.len()))
}

fn route_at(reading: &Reading<'_>, i: usize) -> Option<(&'static str, usize)> {
    const ROUTES: [(&[&str], &str); 24] = [
        (&["by", "mouth"], "oral"),
        (&["per", "os"], "oral"),
        (&["orally"], "oral"),
        (&["oral"], "oral"),
        (&["po"], "oral"),
        (&["iv"], "intravenous"),
        (&["intravenous"], "intravenous"),
        (&["intravenously"], "intravenous"),
        (&["im"], "intramuscular"),
        (&["intramuscular"], "intramuscular"),
        (&["intramuscularly"], "intramuscular"),
        (&["subcut"], "subcutaneous"),
        (&["subcutaneous"], "subcutaneous"),
        (&["subcutaneously"], "subcutaneous"),
        (&["sc"], "subcutaneous"),
        (&["subq"], "subcutaneous"),
        (&["inhaled"], "inhaled"),
        (&["nebulised"], "inhaled"),
        (&["nebulized"], "inhaled"),
        (&["topical"], "topical"),
        (&["topically"], "topical"),
        (&["sublingual"], "sublingual"),
        (&["sublingually"], "sublingual"),
        (&["transdermal"], "transdermal"),
    ];
    ROUTES
        .iter()
        .find(|(words, _)| reading.words_at(i, words))
        .map(|(words, route)| (*route, words.len()))
}

/// Started, continued or stopped: a participle right after what was said
/// of it or after an auxiliary ("warfarin was stopped"), else the nearest
/// verb before the name in its sentence.
fn status(
    reading: &Reading<'_>,
    mention: &Mention,
    said_end: usize,
    next_mention: usize,
) -> MedicationStatus {
    let after_end = (mention.end..next_mention.min(mention.end + 10))
        .find(|&j| reading.tokens[j].ends_sentence())
        .unwrap_or(next_mention.min(mention.end + 10));
    for j in mention.end..after_end {
        let attached = j == said_end
            || (j > 0
                && reading.word(j - 1).is_some_and(|w| {
                    matches!(w, "was" | "were" | "is" | "are" | "been" | "be" | "got")
                }));
        match reading.word(j) {
            Some(w) if attached && STOPPED_AFTER.contains(&w) => return MedicationStatus::Stopped,
            Some(w) if attached && STARTED_AFTER.contains(&w) => return MedicationStatus::Started,
            _ => {}
        }
    }
    let mut i = mention.start;
    let mut words = 0;
    while i > 0 && words < 10 {
        i -= 1;
        if reading.tokens[i].ends_sentence() {
            break;
        }
        let Some(word) = reading.word(i) else {
            continue;
        };
        words += 1;
        if word == "longer" && i > 0 && reading.word(i - 1) == Some("no") {
            return MedicationStatus::Stopped;
        }
        if STOP_WORDS.contains(&word) {
            return MedicationStatus::Stopped;
        }
        if START_WORDS.contains(&word) {
            return MedicationStatus::Started;
        }
        if CONTINUE_WORDS.contains(&word) {
            // "no longer taking warfarin"
            let stopped = i >= 2
                && reading.word(i - 1) == Some("longer")
                && reading.word(i - 2) == Some("no");
            return if stopped {
                MedicationStatus::Stopped
            } else {
                MedicationStatus::Continued
            };
        }
    }
    MedicationStatus::Continued
}

/// A number at `i` as a measurement is said: "one forty" is 140.
fn measurement_at(reading: &Reading<'_>, i: usize) -> Option<(f64, usize)> {
    let spoken = |k: usize| {
        matches!(
            reading.tokens.get(k).map(|t| &t.kind),
            Some(TokenKind::Number { spoken: true, .. })
        )
    };
    let first = reading.number(i)?;
    match reading.number(i + 1) {
        Some(second)
            if spoken(i)
                && spoken(i + 1)
                && (first == 1.0 || first == 2.0)
                && (10.0..100.0).contains(&second) =>
        {
            Some((first * 100.0 + second, 2))
        }
        _ => Some((first, 1)),
    }
}

fn vital_signs(reading: &Reading<'_>) -> Vec<VitalSign> {
    const CUES: [(&[&str], &str); 27] = [
        (&["blood", "pressure"], "blood_pressure"),
        (&["bp"], "blood_pressure"),
        (&["heart", "rate"], "heart_rate"),
        (&["pulse", "rate"], "heart_rate"),
        (&["pulse"], "heart_rate"),
        (&["hr"], "heart_rate"),
        (&["respiratory", "rate"], "respiratory_rate"),
        (&["resp", "rate"], "respiratory_rate"),
        (&["respirations"], "respiratory_rate"),
        (&["rr"], "respiratory_rate"),
        (&["temperature"], "temperature"),
        (&["temp"], "temperature"),
        (&["febrile", "to"], "temperature"),
        (&["oxygen", "saturation"], "oxygen_saturation"),
        (&["oxygen", "saturations"], "oxygen_saturation"),
        (&["saturation"], "oxygen_saturation"),
        (&["saturations"], "oxygen_saturation"),
        (&["saturating"], "oxygen_saturation"),
        (&["sats"], "oxygen_saturation"),
        (&["spo"], "oxygen_saturation"),
        (&["blood", "glucose"], "glucose"),
        (&["blood", "sugar"], "glucose"),
        (&["glucose"], "glucose"),
        (&["bsl"], "glucose"),
        (&["bgl"], "glucose"),
        (&["weight"], "weight"),
        (&["weighs"], "weight"),
    ];
    let mut signs = Vec::new();
    let mut i = 0;
    while i < reading.tokens.len() {
        let Some((words, kind)) = CUES.iter().find(|(words, _)| reading.words_at(i, words)) else {
            i += 1;
            continue;
        };
        let mut j = i + words.len();
        if *kind == "oxygen_saturation"
            && reading.number(j) == Some(2.0)
            && reading.word(i) == Some("spo")
        {
            j += 1; // "SpO2"
        }
        let limit = (j + 6).min(reading.tokens.len());
        let Some(at) = (j..limit)
            .take_while(|&k| !reading.tokens[k].ends_sentence())
            .find(|&k| reading.number(k).is_some())
        else {
            i = j;
            continue;
        };
        let Some((value, len)) = measurement_at(reading, at) else {
            i = j;
            continue;
        };
        let mut end = at + len;
        let mut diastolic = None;
        if *kind == "blood_pressure" {
            let over = reading.word(end) == Some("over")
                || matches!(
                    reading.tokens.get(end).map(|t| &t.kind),
                    Some(TokenKind::Punct('/'))
                );
            match (over, measurement_at(reading, end + 1)) {
                (true, Some((low, len))) => {
                    diastolic = Some(low);
                    end += 1 + len;
                }
                _ => {
                    i = end;
                    continue;
                }
            }
        }
        let next = reading.word(end);
        let (unit, unit_len) = match *kind {
            "blood_pressure" => ("mmHg", usize::from(next == Some("mmhg"))),
            "heart_rate" | "respiratory_rate" => {
                if reading.words_at(end, &["beats", "per", "minute"])
                    || reading.words_at(end, &["breaths", "per", "minute"])
                {
                    ("/min", 3)
                } else {
                    (
                        "/min",
                        usize::from(matches!(next, Some("bpm" | "beats" | "breaths"))),
                    )
                }
            }
            "temperature" => {
                let degrees = usize::from(matches!(next, Some("degrees" | "degree")));
                match reading.word(end + degrees) {
                    Some("fahrenheit" | "f") => ("[degF]", degrees + 1),
                    Some("celsius" | "c" | "centigrade") => ("Cel", degrees + 1),
                    _ if value > 45.0 => ("[degF]", degrees),
                    _ => ("Cel", degrees),
                }
            }
            "oxygen_saturation" => (
                "%",
                usize::from(matches!(next, Some("percent" | "per")))
                    + usize::from(next == Some("per") && reading.word(end + 1) == Some("cent"))
                    + usize::from(matches!(
                        reading.tokens.get(end).map(|t| &t.kind),
                        Some(TokenKind::Punct('%'))
                    )),
            ),
            "glucose" => match next {
                Some("mmol" | "millimoles" | "millimole") => ("mmol/L", 1),
                Some("mg") => ("mg/dL", 1),
                _ if value < 35.0 => ("mmol/L", 0),
                _ => ("mg/dL", 0),
            },
            _ => match next {
                Some("pounds" | "lbs" | "lb") => ("[lb_av]", 1),
                Some("kg" | "kilograms" | "kilos" | "kilo") => ("kg", 1),
                _ => ("kg", 0),
            },
        };
        end += unit_len;
        signs.push(VitalSign {
            kind: (*kind).to_owned(),
            text: reading.said(i, end),
            value,
            diastolic,
            unit: unit.to_owned(),
            span: Some(reading.span(i, end)),
        });
        i = end;
    }
    signs
}

fn month_named(word: &str) -> Option<Month> {
    use Month::*;
    Some(match word {
        "january" | "jan" => January,
        "february" | "feb" => February,
        "march" => March,
        "april" | "apr" => April,
        "may" => May,
        "june" | "jun" => June,
        "july" | "jul" => July,
        "august" | "aug" => August,
        "september" | "sept" | "sep" => September,
        "october" | "oct" => October,
        "november" | "nov" => November,
        "december" | "dec" => December,
        _ => return None,
    })
}

/// `date` moved by `months` (negative: back), the day clamped to the month.
fn add_months(date: Date, months: i32) -> Option<Date> {
    let index = date.year() * 12 + i32::from(date.month() as u8) - 1 + months;
    let year = index.div_euclid(12);
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    let day = date.day().min(month.length(year));
    Date::from_calendar_date(year, month, day).ok()
}

fn shifted(on: Date, amount: f64, unit: &str, sign: i32) -> Option<Date> {
    if amount.fract() != 0.0 || !(0.0..=200.0).contains(&amount) {
        return None;
    }
    let n = amount as i32 * sign;
    match unit {
        "day" | "days" => on.checked_add(Duration::days(i64::from(n))),
        "week" | "weeks" => on.checked_add(Duration::weeks(i64::from(n))),
        "month" | "months" => add_months(on, n),
        "year" | "years" => add_months(on, n * 12),
        _ => None,
    }
}

fn times(reading: &Reading<'_>, on: Date) -> Vec<TimeExpression> {
    let mut found = Vec::new();
    let mut push = |start: usize, end: usize, date: Option<Date>, relation: &str| {
        if let Some(date) = date {
            found.push(TimeExpression {
                text: reading.said(start, end),
                date: date.to_string(),
                relation: relation.to_owned(),
                span: Some(reading.span(start, end)),
                resolved: Some(date),
            });
        }
    };
    let amount = |i: usize| -> Option<(f64, usize)> {
        match reading.word(i) {
            Some("a" | "an")
                if reading.word(i + 1) == Some("couple") && reading.word(i + 2) == Some("of") =>
            {
                Some((2.0, 3))
            }
            Some("a" | "an" | "one") => Some((1.0, 1)),
            Some("couple") if reading.word(i + 1) == Some("of") => Some((2.0, 2)),
            _ => reading.number(i).map(|n| (n, 1)),
        }
    };
    let is_unit = |w: Option<&str>| {
        matches!(
            w,
            Some("day" | "days" | "week" | "weeks" | "month" | "months" | "year" | "years")
        )
    };
    let mut i = 0;
    while i < reading.tokens.len() {
        let word = reading.word(i);
        if reading.words_at(i, &["the", "day", "before", "yesterday"]) {
            push(i, i + 4, on.checked_sub(Duration::days(2)), "past");
            i += 4;
            continue;
        }
        if word == Some("yesterday") || reading.words_at(i, &["last", "night"]) {
            let len = if word == Some("yesterday") { 1 } else { 2 };
            push(i, i + len, on.checked_sub(Duration::days(1)), "past");
            i += len;
            continue;
        }
        if word == Some("tomorrow") {
            push(i, i + 1, on.checked_add(Duration::days(1)), "plan");
            i += 1;
            continue;
        }
        if matches!(word, Some("last" | "next")) && is_unit(reading.word(i + 1)) {
            let sign = if word == Some("last") { -1 } else { 1 };
            let unit = reading.word(i + 1).unwrap_or_default();
            let relation = if sign < 0 { "past" } else { "plan" };
            push(i, i + 2, shifted(on, 1.0, unit, sign), relation);
            i += 2;
            continue;
        }
        // "three days ago", "a week ago"
        if let Some((n, len)) = amount(i)
            && is_unit(reading.word(i + len))
            && reading.word(i + len + 1) == Some("ago")
        {
            let unit = reading.word(i + len).unwrap_or_default();
            push(i, i + len + 2, shifted(on, n, unit, -1), "past");
            i += len + 2;
            continue;
        }
        // "in two weeks"
        if word == Some("in")
            && let Some((n, len)) = amount(i + 1)
            && is_unit(reading.word(i + 1 + len))
        {
            let unit = reading.word(i + 1 + len).unwrap_or_default();
            push(i, i + len + 2, shifted(on, n, unit, 1), "plan");
            i += len + 2;
            continue;
        }
        if let Some((date, len)) = calendar_date(reading, i, on) {
            push(i, i + len, Some(date), "date");
            i += len;
            continue;
        }
        i += 1;
    }
    found
}

/// "2026-11-30", "30 November 2026", "November 30th", "the 30th of November".
fn calendar_date(reading: &Reading<'_>, i: usize, on: Date) -> Option<(Date, usize)> {
    let digits = |k: usize| match reading.tokens.get(k).map(|t| &t.kind) {
        Some(TokenKind::Number {
            digits: Some(d),
            spoken: false,
            ..
        }) => Some(d.clone()),
        _ => None,
    };
    let dash = |k: usize| {
        matches!(
            reading.tokens.get(k).map(|t| &t.kind),
            Some(TokenKind::Punct('-'))
        )
    };
    if let (Some(y), true, Some(m), true, Some(d)) = (
        digits(i),
        dash(i + 1),
        digits(i + 2),
        dash(i + 3),
        digits(i + 4),
    ) && y.len() == 4
    {
        let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
        let date = Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
        return Some((date, 5));
    }
    let ordinal =
        |k: usize| usize::from(matches!(reading.word(k), Some("th" | "st" | "nd" | "rd")));
    let day_at = |k: usize| {
        reading
            .number(k)
            .filter(|n| n.fract() == 0.0 && (1.0..=31.0).contains(n))
            .map(|n| n as u8)
    };
    let year_after = |k: usize| {
        let k = k + usize::from(matches!(
            reading.tokens.get(k).map(|t| &t.kind),
            Some(TokenKind::Punct(','))
        ));
        digits(k)
            .filter(|y| y.len() == 4)
            .and_then(|y| y.parse::<i32>().ok())
            .map(|y| (y, k + 1))
    };
    // "30 November [2026]", "the 30th of November"
    let start = i + usize::from(reading.word(i) == Some("the"));
    if let Some(day) = day_at(start) {
        let mut k = start + 1 + ordinal(start + 1);
        k += usize::from(reading.word(k) == Some("of"));
        if let Some(month) = reading.word(k).and_then(month_named) {
            let (year, end) = year_after(k + 1).unwrap_or((on.year(), k + 1));
            let date = Date::from_calendar_date(year, month, day).ok()?;
            return Some((date, end - i));
        }
    }
    // "November 30th [2026]"
    if let Some(month) = reading.word(i).and_then(month_named)
        && reading.word(i) != Some("may")
        && let Some(day) = day_at(i + 1)
    {
        let k = i + 2 + ordinal(i + 2);
        let (year, end) = year_after(k).unwrap_or((on.year(), k));
        let date = Date::from_calendar_date(year, month, day).ok()?;
        return Some((date, end - i));
    }
    None
}
