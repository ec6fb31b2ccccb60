//! The verification rules: each reads what was extracted (and the text, for
//! identifiers) and returns its alerts with the evidence spans. Which rules
//! run, and their severities, come from rules.toml; what they know of drugs,
//! classes, interactions and allergens from the other data files.

use std::collections::BTreeSet;

use time::Date;

use super::lexicon::{Lexicon, Term};
use super::model::{Alert, Evidence, Extracted, MedicationStatus, PatientContext, Severity, Span};
use super::text::{CodePoints, TokenKind, tokenize};

/// A drug the patient is on (or is starting): from the note, with its span,
/// or from the context.
#[derive(Debug, Clone)]
struct ActiveDrug {
    drug: usize,
    said: String,
    span: Option<Span>,
}

/// What the rules look at.
pub struct Facts<'a> {
    lexicon: &'a Lexicon,
    text: &'a str,
    extracted: &'a Extracted,
    context: &'a PatientContext,
    encounter: Date,
    /// The note's active drugs, resolved in the lexicon once for every rule.
    note_drugs: Vec<ActiveDrug>,
    /// The context's medications, resolved likewise.
    context_drugs: Vec<ActiveDrug>,
}

impl<'a> Facts<'a> {
    /// The facts of `text`: what was extracted from it, what the caller
    /// knows besides, and the encounter's day.
    pub fn new(
        lexicon: &'a Lexicon,
        text: &'a str,
        extracted: &'a Extracted,
        context: &'a PatientContext,
        encounter: Date,
    ) -> Self {
        let note_drugs = extracted
            .medications
            .iter()
            .filter(|m| m.status != MedicationStatus::Stopped)
            .filter_map(|m| {
                Some(ActiveDrug {
                    drug: lexicon.drug_named(&m.generic)?,
                    said: m.text.clone(),
                    span: m.span,
                })
            })
            .collect();
        let context_drugs = context
            .medications
            .iter()
            .filter_map(|name| {
                Some(ActiveDrug {
                    drug: lexicon.drug_named(name)?,
                    said: name.clone(),
                    span: None,
                })
            })
            .collect();
        Self {
            lexicon,
            text,
            extracted,
            context,
            encounter,
            note_drugs,
            context_drugs,
        }
    }

    fn evidence(&self, span: Span) -> Evidence {
        let text: String = self
            .text
            .chars()
            .skip(span.start)
            .take(span.end - span.start)
            .collect();
        Evidence {
            start: span.start,
            end: span.end,
            text,
        }
    }

    fn evidence_of(&self, spans: impl IntoIterator<Item = Option<Span>>) -> Vec<Evidence> {
        let mut spans: Vec<Span> = spans.into_iter().flatten().collect();
        spans.sort_by_key(|s| (s.start, s.end));
        spans.dedup();
        spans.into_iter().map(|s| self.evidence(s)).collect()
    }

    fn generic(&self, drug: usize) -> &str {
        &self.lexicon.drugs[drug].generic
    }

    /// The note's active drugs, then the context's.
    fn active(&self) -> (&[ActiveDrug], &[ActiveDrug]) {
        (&self.note_drugs, &self.context_drugs)
    }
}

/// An alert's id: its rule and where its first evidence is
/// (`ALLERGY_CONFLICT@27-38`), the same for the same finding in the same
/// text, so that a clinician's acknowledgement names what they saw.
fn alert_id(rule_id: &str, evidence: &[Evidence]) -> String {
    match evidence.first() {
        Some(e) => format!("{rule_id}@{}-{}", e.start, e.end),
        None => rule_id.to_owned(),
    }
}

/// Runs every enabled rule; the alerts, most severe first, and the ids run.
pub fn check(facts: &Facts<'_>) -> (Vec<Alert>, Vec<String>) {
    let mut alerts = Vec::new();
    let mut ran = Vec::new();
    for rule in &facts.lexicon.rules {
        if !rule.enabled {
            continue;
        }
        let severity = Severity::parse(&rule.severity).unwrap_or(Severity::High);
        let found = match rule.id.as_str() {
            "DRUG_INTERACTION" => drug_interactions(facts),
            "ALLERGY_CONFLICT" => allergy_conflicts(facts, severity),
            "DUPLICATE_THERAPY" => duplicate_therapy(facts, severity),
            "DOSE_OUT_OF_RANGE" => doses_out_of_range(facts, severity),
            "SEPSIS_NO_ANTIBIOTIC" => sepsis_without_antibiotic(facts, severity),
            "PII_IDENTIFIER" => identifiers(facts, severity),
            "DATE_OUTSIDE_ENCOUNTER" => dates_outside_encounter(facts, severity),
            "UNSUPPORTED_BY_TRANSCRIPT" => unsupported(facts, severity),
            _ => continue,
        };
        ran.push(rule.id.clone());
        alerts.extend(
            found
                .into_iter()
                .map(|(severity, message, evidence)| Alert {
                    id: alert_id(&rule.id, &evidence),
                    rule_id: rule.id.clone(),
                    severity,
                    message,
                    evidence,
                }),
        );
    }
    alerts.sort_by_key(|a| a.severity);
    // Two findings of one rule on the same words (rare) keep distinct ids.
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for alert in &mut alerts {
        let n = seen.entry(alert.id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            alert.id = format!("{}#{n}", alert.id);
        }
    }
    (alerts, ran)
}

type Found = Vec<(Severity, String, Vec<Evidence>)>;

fn drug_interactions(facts: &Facts<'_>) -> Found {
    let (note, context) = facts.active();
    let lexicon = facts.lexicon;
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    let all: Vec<&ActiveDrug> = note.iter().chain(context).collect();
    for (n, interaction) in lexicon.interactions.iter().enumerate() {
        let severity = Severity::parse(&interaction.severity).unwrap_or(Severity::High);
        for x in &all {
            if !interaction
                .a
                .iter()
                .any(|name| lexicon.drug_is(x.drug, name))
            {
                continue;
            }
            for y in &all {
                if x.drug == y.drug
                    || (x.span.is_none() && y.span.is_none())
                    || !interaction
                        .b
                        .iter()
                        .any(|name| lexicon.drug_is(y.drug, name))
                    || !seen.insert((n, x.drug, y.drug))
                {
                    continue;
                }
                found.push((
                    severity,
                    format!(
                        "{} ({} and {})",
                        interaction.message,
                        facts.generic(x.drug),
                        facts.generic(y.drug)
                    ),
                    facts.evidence_of(
                        all.iter()
                            .filter(|d| d.drug == x.drug || d.drug == y.drug)
                            .map(|d| d.span),
                    ),
                ));
            }
        }
    }
    found
}

/// The drugs (generic names or `class:<id>`) an allergy to `term` rules out.
fn ruled_out_by(lexicon: &Lexicon, term: Term) -> Vec<String> {
    match term {
        Term::Allergen(a) => lexicon.allergens[a].conflicts.clone(),
        Term::Class(c) => vec![format!("class:{}", lexicon.classes[c].id)],
        Term::Drug(d) => {
            let drug = &lexicon.drugs[d];
            let mut out = vec![drug.generic.clone()];
            for class in &drug.classes {
                let name = format!("class:{class}");
                if lexicon
                    .allergens
                    .iter()
                    .any(|a| a.conflicts.contains(&name))
                {
                    out.push(name);
                }
            }
            out
        }
        Term::Condition(_) => Vec::new(),
    }
}

fn allergy_conflicts(facts: &Facts<'_>, severity: Severity) -> Found {
    let lexicon = facts.lexicon;
    let mut allergies: Vec<(String, Option<Span>, Vec<String>)> = Vec::new();
    for allergy in &facts.extracted.allergies {
        if let Some(term) = lexicon
            .allergen_term(&allergy.text)
            .or_else(|| lexicon.allergen_term(&allergy.substance))
        {
            allergies.push((
                allergy.text.clone(),
                allergy.span,
                ruled_out_by(lexicon, term),
            ));
        }
    }
    for name in &facts.context.allergies {
        if let Some(term) = lexicon.allergen_term(name) {
            allergies.push((name.clone(), None, ruled_out_by(lexicon, term)));
        }
    }
    let (note, _) = facts.active();
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for drug in note {
        for (allergen, allergy_span, conflicts) in &allergies {
            if conflicts
                .iter()
                .any(|name| lexicon.drug_is(drug.drug, name))
                && seen.insert((drug.drug, allergen.to_lowercase()))
            {
                let generic = facts.generic(drug.drug);
                let named = if drug.said.eq_ignore_ascii_case(generic) {
                    generic.to_owned()
                } else {
                    format!("{} ({generic})", drug.said)
                };
                found.push((
                    severity,
                    format!("{named} is prescribed, and the patient is allergic to {allergen}"),
                    facts.evidence_of([drug.span, *allergy_span]),
                ));
            }
        }
    }
    found
}

fn duplicate_therapy(facts: &Facts<'_>, severity: Severity) -> Found {
    let lexicon = facts.lexicon;
    let (note, context) = facts.active();
    let mut found = Vec::new();
    for (c, class) in lexicon.classes.iter().enumerate() {
        if !class.duplicate_therapy {
            continue;
        }
        let members: Vec<&ActiveDrug> = note
            .iter()
            .chain(context)
            .filter(|d| lexicon.in_class(d.drug, c))
            .collect();
        let generics: BTreeSet<usize> = members.iter().map(|d| d.drug).collect();
        if generics.len() < 2 || !members.iter().any(|d| d.span.is_some()) {
            continue;
        }
        let names: Vec<&str> = generics.iter().map(|d| facts.generic(*d)).collect();
        found.push((
            severity,
            format!("Two {} at once: {}", class.name, names.join(" and ")),
            facts.evidence_of(members.iter().map(|d| d.span)),
        ));
    }
    found
}

fn format_amount(amount: f64) -> String {
    let rounded = (amount * 100.0).round() / 100.0;
    format!("{rounded}")
}

fn doses_out_of_range(facts: &Facts<'_>, severity: Severity) -> Found {
    use super::lexicon::DoseUnit;
    let lexicon = facts.lexicon;
    let mut found = Vec::new();
    for medication in &facts.extracted.medications {
        let (Some(dose), Some(unit)) = (medication.dose, medication.unit.as_deref()) else {
            continue;
        };
        if medication.status == MedicationStatus::Stopped {
            continue;
        }
        let Some(d) = lexicon.drug_named(&medication.generic) else {
            continue;
        };
        let drug = &lexicon.drugs[d];
        let Some(expected) = drug.unit else { continue };
        let in_mg = match unit {
            "mg" => Some(dose),
            "g" => Some(dose * 1000.0),
            "mcg" => Some(dose / 1000.0),
            _ => None,
        };
        let evidence = facts.evidence_of([medication.span]);
        let amount = match (expected, unit, in_mg) {
            (DoseUnit::Units, "units", _) => dose,
            (DoseUnit::Mg, _, Some(mg)) => mg,
            (DoseUnit::Mcg, _, Some(mg)) => mg * 1000.0,
            (DoseUnit::Units, _, Some(_)) | (DoseUnit::Mg | DoseUnit::Mcg, "units", _) => {
                found.push((
                    severity,
                    format!(
                        "{} is dosed in {}, not {unit}: check the unit ({} {unit})",
                        drug.generic,
                        unit_name(expected),
                        format_amount(dose)
                    ),
                    evidence,
                ));
                continue;
            }
            _ => continue, // ml, tablets, puffs: no mass to compare
        };
        let Some(max) = drug.daily_max else { continue };
        let daily = amount * medication.per_day.unwrap_or(1.0);
        if daily > max * (1.0 + 1e-9) {
            let how_often = medication
                .frequency
                .as_deref()
                .map_or_else(|| " in one dose".to_owned(), |f| format!(" {f}"));
            found.push((
                severity,
                format!(
                    "{} {} {unit}{how_often} is {} {} a day, above the usual adult maximum of {} {}",
                    drug.generic,
                    format_amount(dose),
                    format_amount(daily),
                    unit_name(expected),
                    format_amount(max),
                    unit_name(expected),
                ),
                evidence,
            ));
        }
    }
    found
}

fn unit_name(unit: super::lexicon::DoseUnit) -> &'static str {
    use super::lexicon::DoseUnit;
    match unit {
        DoseUnit::Mg => "mg",
        DoseUnit::Mcg => "mcg",
        DoseUnit::Units => "units",
    }
}

fn sepsis_without_antibiotic(facts: &Facts<'_>, severity: Severity) -> Found {
    let lexicon = facts.lexicon;
    let sepsis = &lexicon.conditions[lexicon.sepsis_condition].id;
    let mentions: Vec<Option<Span>> = facts
        .extracted
        .conditions
        .iter()
        .filter(|c| &c.name == sepsis)
        .map(|c| c.span)
        .collect();
    if mentions.is_empty() {
        return Vec::new();
    }
    let (note, context) = facts.active();
    if note
        .iter()
        .chain(context)
        .any(|d| lexicon.in_class(d.drug, lexicon.antibiotic_class))
    {
        return Vec::new();
    }
    vec![(
        severity,
        "Sepsis is documented and no antibiotic is given or continued".to_owned(),
        facts.evidence_of(mentions),
    )]
}

/// Australian Medicare numbers (4+5+1 digits, an optional issue number) and
/// US Social Security numbers (3+2+4), written or spoken digit by digit.
fn identifiers(facts: &Facts<'_>, severity: Severity) -> Found {
    let tokens = tokenize(facts.text);
    let points = CodePoints::new(facts.text);
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // A run of integer numbers with only spaces, dashes or commas between.
        let mut groups: Vec<(usize, bool)> = Vec::new();
        let mut digits = String::new();
        let mut j = i;
        let mut last = i;
        while let Some(token) = tokens.get(j) {
            match &token.kind {
                TokenKind::Number {
                    digits: Some(d),
                    spoken,
                    ..
                } if !*spoken || d.len() == 1 => {
                    digits.push_str(d);
                    groups.push((d.len(), *spoken));
                    last = j;
                    j += 1;
                }
                TokenKind::Punct('-' | ',') if !groups.is_empty() => j += 1,
                _ => break,
            }
        }
        if groups.is_empty() {
            i += 1;
            continue;
        }
        let lengths: Vec<usize> = groups.iter().map(|g| g.0).collect();
        let all_spoken = groups.iter().all(|g| g.1);
        let kind = if lengths == [4, 5, 1]
            || lengths == [4, 5, 1, 1]
            || (all_spoken && (digits.len() == 10 || digits.len() == 11))
            || (lengths == [10] && matches!(digits.as_bytes().first(), Some(b'2'..=b'6')))
        {
            Some("An Australian Medicare number")
        } else if lengths == [3, 2, 4] || (all_spoken && digits.len() == 9) {
            Some("A US Social Security number")
        } else {
            None
        };
        if let Some(kind) = kind {
            let span = Span {
                start: points.at(tokens[i].start),
                end: points.at(tokens[last].end),
            };
            found.push((
                severity,
                format!("{kind} is in the note text: identifiers belong in the patient's record, not in the note"),
                vec![facts.evidence(span)],
            ));
        }
        i = last + 1;
    }
    found
}

fn dates_outside_encounter(facts: &Facts<'_>, severity: Severity) -> Found {
    let mut found = Vec::new();
    for time in &facts.extracted.times {
        let Some(date) = time.resolved else { continue };
        let problem = if time.relation != "plan" && date > facts.encounter {
            Some(format!(
                "\"{}\" is {date}, after the encounter on {}",
                time.text, facts.encounter
            ))
        } else if let Some(admitted) = facts.context.admission_date
            && date < admitted
        {
            Some(format!(
                "\"{}\" is {date}, before the admission on {admitted}",
                time.text
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            found.push((severity, message, facts.evidence_of([time.span])));
        }
    }
    found
}

fn unsupported(facts: &Facts<'_>, severity: Severity) -> Found {
    let extracted = facts.extracted;
    let missing = extracted
        .medications
        .iter()
        .filter(|m| m.span.is_none())
        .map(|m| ("medication", &m.text))
        .chain(
            extracted
                .allergies
                .iter()
                .filter(|a| a.span.is_none())
                .map(|a| ("allergy", &a.text)),
        )
        .chain(
            extracted
                .conditions
                .iter()
                .filter(|c| c.span.is_none())
                .map(|c| ("condition", &c.text)),
        )
        .chain(
            extracted
                .vital_signs
                .iter()
                .filter(|v| v.span.is_none())
                .map(|v| ("vital sign", &v.text)),
        );
    missing
        .map(|(kind, text)| {
            (
                severity,
                format!("The {kind} \"{text}\" was extracted but is not in the transcript"),
                Vec::new(),
            )
        })
        .collect()
}
