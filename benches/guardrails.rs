//! The guardrails' embedded engine on the annotated notes of
//! `benches/guardrails/notes.json` (written for this project): precision and
//! recall per item type and per rule, false critical or high alerts on the
//! negative notes, and the time of one check of a 500-word note.
//! `cargo bench --bench guardrails` prints the tables docs/BENCHMARKS.md holds.

// A benchmark that cannot do its work stops with a message: no recovery to attempt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Instant;

use clinscribe::guardrails::{Guardrails, PatientContext};
use clinscribe::timestamp::parse_date;
use serde_json::Value;

#[derive(Default)]
struct Tally {
    expected: usize,
    found: usize,
    matched: usize,
}

impl Tally {
    fn add(&mut self, expected: &[String], found: &[String]) {
        self.expected += expected.len();
        self.found += found.len();
        let mut left = found.to_vec();
        for e in expected {
            if let Some(i) = left.iter().position(|f| f == e) {
                left.remove(i);
                self.matched += 1;
            }
        }
    }

    fn precision(&self) -> f64 {
        if self.found == 0 {
            1.0
        } else {
            self.matched as f64 / self.found as f64
        }
    }

    fn recall(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.matched as f64 / self.expected as f64
        }
    }
}

fn keys(items: &Value, key: impl Fn(&Value) -> String) -> Vec<String> {
    items.as_array().unwrap().iter().map(key).collect()
}

/// A medication as compared: generic, status, and the dose when the
/// annotation gives one.
fn medication_key(m: &Value, with_dose: bool) -> String {
    let mut key = format!(
        "{} {}",
        m["generic"].as_str().unwrap(),
        m["status"].as_str().unwrap()
    );
    if with_dose && let (Some(dose), Some(unit)) = (m["dose"].as_f64(), m["unit"].as_str()) {
        key.push_str(&format!(" {dose} {unit}"));
    }
    key
}

fn vital_key(v: &Value) -> String {
    format!(
        "{} {}",
        v["kind"].as_str().unwrap(),
        v["value"].as_f64().unwrap()
    )
}

fn main() {
    let set: Value = serde_json::from_str(include_str!("guardrails/notes.json")).unwrap();
    let encounter = parse_date(set["encounter_date"].as_str().unwrap()).unwrap();
    let guardrails = Guardrails::built_in().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut rules: BTreeMap<String, Tally> = BTreeMap::new();
    let mut false_serious_on_negative = Vec::new();
    let mut misses = Vec::new();
    let notes = set["notes"].as_array().unwrap();
    for note in notes {
        let text = note["text"].as_str().unwrap();
        let context = PatientContext {
            admission_date: note["context"]["admission_date"]
                .as_str()
                .map(|d| parse_date(d).unwrap()),
            encounter_date: Some(encounter),
            ..Default::default()
        };
        let result =
            serde_json::to_value(runtime.block_on(guardrails.verify(text, &context)).unwrap())
                .unwrap();
        let expected = &note["expected"];
        let got = &result["extracted"];
        // Dose compared only where the annotation gives one.
        let expected_meds = keys(&expected["medications"], |m| medication_key(m, true));
        let found_meds: Vec<String> = got["medications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let annotated_dose = expected["medications"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["generic"] == m["generic"] && e.get("dose").is_some());
                medication_key(m, annotated_dose)
            })
            .collect();
        let pairs: [(&str, Vec<String>, Vec<String>); 4] = [
            ("medications", expected_meds, found_meds),
            (
                "allergies",
                keys(&expected["allergies"], |a| a.as_str().unwrap().to_owned()),
                keys(&got["allergies"], |a| {
                    a["substance"].as_str().unwrap().to_owned()
                }),
            ),
            (
                "conditions",
                keys(&expected["conditions"], |c| c.as_str().unwrap().to_owned()),
                keys(&got["conditions"], |c| {
                    c["name"].as_str().unwrap().to_owned()
                }),
            ),
            (
                "vital signs",
                keys(&expected["vital_signs"], vital_key),
                keys(&got["vital_signs"], vital_key),
            ),
        ];
        for (kind, want, found) in pairs {
            let mut extra = found.clone();
            extra.retain(|f| !want.contains(f));
            let mut missing = want.clone();
            missing.retain(|w| !found.contains(w));
            if !extra.is_empty() || !missing.is_empty() {
                misses.push(format!(
                    "{} {kind}: missing {missing:?}, extra {extra:?}",
                    note["id"].as_str().unwrap()
                ));
            }
            tallies.entry(kind).or_default().add(&want, &found);
        }
        let want_rules = keys(&expected["alerts"], |r| r.as_str().unwrap().to_owned());
        let found_rules = keys(&result["alerts"], |a| {
            a["rule_id"].as_str().unwrap().to_owned()
        });
        for rule in result["checks_performed"].as_array().unwrap() {
            let rule = rule.as_str().unwrap();
            let w: Vec<String> = want_rules.iter().filter(|r| *r == rule).cloned().collect();
            let f: Vec<String> = found_rules.iter().filter(|r| *r == rule).cloned().collect();
            if w.len() != f.len() {
                misses.push(format!(
                    "{} {rule}: expected {}, fired {}",
                    note["id"].as_str().unwrap(),
                    w.len(),
                    f.len()
                ));
            }
            rules.entry(rule.to_owned()).or_default().add(&w, &f);
        }
        if note["negative"] == true {
            for alert in result["alerts"].as_array().unwrap() {
                if matches!(alert["severity"].as_str(), Some("critical" | "high")) {
                    false_serious_on_negative.push(format!(
                        "{}: {}",
                        note["id"].as_str().unwrap(),
                        alert["message"]
                    ));
                }
            }
        }
    }

    // A 500-word note: the set's texts in turn.
    let mut long = String::new();
    for note in notes.iter().cycle() {
        if long.split_whitespace().count() >= 500 {
            break;
        }
        long.push_str(note["text"].as_str().unwrap());
        long.push(' ');
    }
    let words = long.split_whitespace().count();
    let context = PatientContext {
        encounter_date: Some(encounter),
        ..Default::default()
    };
    let runs = 2000;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let result = runtime
            .block_on(guardrails.verify(&long, &context))
            .unwrap();
        times.push(start.elapsed());
        std::hint::black_box(result);
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;

    println!(
        "{} notes ({} negative), engine embedded, ruleset {}\n",
        notes.len(),
        notes.iter().filter(|n| n["negative"] == true).count(),
        guardrails.lexicon().version
    );
    println!(
        "| Item type | Expected | Extracted | Precision | Recall |\n|---|---:|---:|---:|---:|"
    );
    for (kind, t) in &tallies {
        println!(
            "| {kind} | {} | {} | {:.3} | {:.3} |",
            t.expected,
            t.found,
            t.precision(),
            t.recall()
        );
    }
    println!("\n| Rule | Expected | Fired | Precision | Recall |\n|---|---:|---:|---:|---:|");
    for (rule, t) in &rules {
        println!(
            "| `{rule}` | {} | {} | {:.3} | {:.3} |",
            t.expected,
            t.found,
            t.precision(),
            t.recall()
        );
    }
    println!(
        "\nCritical or high alerts on the negative notes: {}",
        false_serious_on_negative.len()
    );
    for f in &false_serious_on_negative {
        println!("  - {f}");
    }
    println!(
        "\nOne check of a {words}-word note ({runs} runs): median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    if !misses.is_empty() {
        println!("\nDifferences from the annotations:");
        for m in &misses {
            println!("  - {m}");
        }
    }
}
