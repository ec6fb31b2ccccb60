//! The clinical guardrails through `POST /api/v1/verify`: each rule on
//! positive cases (it fires, with its severity and the span of its evidence)
//! and on the negative ones where naive checkers fail (negation, stopped
//! drugs, safe combinations, "no known allergies"); the spoken forms a
//! transcription engine writes; the body's refusals.

use serde_json::{Value, json};

use crate::common::{self, TestApp};
use crate::review::{current, patch, tag_of};

const ENCOUNTER: &str = "2026-12-01";

async fn verify(app: &TestApp, text: &str, context: Value) -> Value {
    let mut context = context;
    if context.get("encounter_date").is_none() {
        context["encounter_date"] = json!(ENCOUNTER);
    }
    let body = json!({"text": text, "context": context}).to_string();
    let response = app.post_json("/api/v1/verify", &body).await;
    assert_eq!(response.status, 200, "{text}: {}", response.text);
    response.body
}

fn alerts_of<'a>(result: &'a Value, rule: &str) -> Vec<&'a Value> {
    result["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule_id"] == rule)
        .collect()
}

/// Every evidence span's text is the text at its offsets (code points).
fn assert_spans_match(text: &str, result: &Value) {
    let chars: Vec<char> = text.chars().collect();
    for alert in result["alerts"].as_array().unwrap() {
        for evidence in alert["evidence"].as_array().unwrap() {
            let (start, end) = (
                evidence["start"].as_u64().unwrap() as usize,
                evidence["end"].as_u64().unwrap() as usize,
            );
            let at: String = chars[start..end].iter().collect();
            assert_eq!(at, evidence["text"].as_str().unwrap(), "{text}");
        }
    }
}

struct Case {
    text: &'static str,
    context: Value,
    /// The severity it must fire with, and texts its evidence must include;
    /// None: it must not fire.
    fires: Option<(&'static str, &'static [&'static str])>,
}

fn fires(text: &'static str, severity: &'static str, evidence: &'static [&'static str]) -> Case {
    Case {
        text,
        context: json!({}),
        fires: Some((severity, evidence)),
    }
}

fn silent(text: &'static str) -> Case {
    Case {
        text,
        context: json!({}),
        fires: None,
    }
}

fn with(mut case: Case, context: Value) -> Case {
    case.context = context;
    case
}

async fn run_rule(rule: &str, cases: Vec<Case>) {
    let app = TestApp::new().await;
    for case in cases {
        let result = verify(&app, case.text, case.context.clone()).await;
        assert_spans_match(case.text, &result);
        let found = alerts_of(&result, rule);
        match case.fires {
            Some((severity, evidence)) => {
                assert_eq!(found.len(), 1, "{rule} on {:?}: {result:#}", case.text);
                assert_eq!(found[0]["severity"], severity, "{:?}", case.text);
                let texts: Vec<&str> = found[0]["evidence"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["text"].as_str().unwrap())
                    .collect();
                for want in evidence {
                    assert!(
                        texts.iter().any(|t| t.contains(want)),
                        "{rule} on {:?}: evidence {texts:?} lacks {want:?}",
                        case.text
                    );
                }
                if matches!(severity, "critical" | "high") {
                    assert_eq!(result["passed"], false, "{:?}", case.text);
                }
            }
            None => assert!(
                found.is_empty(),
                "{rule} fired on {:?}: {found:#?}",
                case.text
            ),
        }
        assert!(
            result["checks_performed"]
                .as_array()
                .unwrap()
                .contains(&json!(rule))
        );
    }
}

#[tokio::test]
async fn drug_interactions_fire_on_active_drugs_only() {
    run_rule(
        "DRUG_INTERACTION",
        vec![
            fires(
                "Continue warfarin 5 mg daily. Start ibuprofen 400 mg three times a day for knee pain.",
                "critical",
                &["warfarin 5 mg daily", "ibuprofen 400 mg three times a day"],
            ),
            with(
                fires("Prescribed naproxen 500 mg twice daily.", "critical", &["naproxen 500 mg twice daily"]),
                json!({"medications": ["Coumadin"]}),
            ),
            fires(
                "Takes aspirin 81 mg daily and warfarin.",
                "critical",
                &["aspirin 81 mg daily", "warfarin"],
            ),
            fires(
                "Started sildenafil 50 mg as needed. Uses nitroglycerin spray for angina.",
                "critical",
                &["sildenafil 50 mg as needed", "nitroglycerin"],
            ),
            fires(
                "Oxycodone 5 mg every 6 hours as needed and lorazepam 1 mg at night.",
                "high",
                &["lorazepam 1 mg at night"],
            ),
            silent("Warfarin 5 mg daily. Paracetamol 1 g four times a day as needed for pain."),
            silent("Patient denies taking ibuprofen. Continue warfarin 5 mg daily."),
            silent("Stopped warfarin last year. Start ibuprofen 400 mg three times a day."),
            silent("Warfarin was stopped. Started naproxen 500 mg twice daily."),
            silent("No longer taking warfarin; ibuprofen 400 mg as needed."),
            silent("Avoid NSAIDs such as ibuprofen while on warfarin."),
            with(silent("Start metformin 500 mg twice daily."), json!({"medications": ["warfarin", "aspirin"]})),
        ],
    )
    .await;
}

#[tokio::test]
async fn allergy_conflicts_fire_on_the_drug_and_the_allergy() {
    run_rule(
        "ALLERGY_CONFLICT",
        vec![
            fires(
                "Allergic to penicillin. Start amoxicillin 500 mg three times a day.",
                "critical",
                &["amoxicillin 500 mg three times a day", "penicillin"],
            ),
            fires(
                "Penicillin allergy. Plan: ampicillin IV.",
                "critical",
                &["ampicillin IV", "Penicillin"],
            ),
            with(
                fires(
                    "Start Augmentin 875 mg twice daily.",
                    "critical",
                    &["Augmentin 875 mg twice daily"],
                ),
                json!({"allergies": ["penicillin"]}),
            ),
            fires(
                "Allergies: sulfa. Started Bactrim twice daily.",
                "critical",
                &["Bactrim twice daily", "sulfa"],
            ),
            fires(
                "Allergic to amoxicillin, so flucloxacillin 500 mg four times a day.",
                "critical",
                &["flucloxacillin"],
            ),
            fires(
                "Allergic to aspirin. Ibuprofen 400 mg as needed.",
                "critical",
                &["Ibuprofen 400 mg as needed"],
            ),
            silent("No known allergies. Start amoxicillin 500 mg three times a day."),
            silent("NKDA. Amoxicillin 500 mg t.i.d."),
            silent("Not allergic to penicillin. Start amoxicillin 500 mg three times a day."),
            silent("Allergic to penicillin. Start azithromycin 500 mg daily."),
            silent("Allergic to penicillin. Amoxicillin was stopped."),
            with(
                silent("Start doxycycline 100 mg twice daily."),
                json!({"allergies": ["penicillin", "latex"]}),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn duplicate_therapy_fires_on_two_drugs_of_one_class() {
    run_rule(
        "DUPLICATE_THERAPY",
        vec![
            fires(
                "Continue lisinopril 10 mg daily and start ramipril 5 mg daily.",
                "high",
                &["lisinopril 10 mg daily", "ramipril 5 mg daily"],
            ),
            fires(
                "On atorvastatin 40 mg at night. Add simvastatin 20 mg.",
                "high",
                &["simvastatin 20 mg"],
            ),
            with(
                fires("Start rosuvastatin 10 mg daily.", "high", &["rosuvastatin"]),
                json!({"medications": ["Lipitor"]}),
            ),
            fires(
                "Ibuprofen 400 mg and naproxen 500 mg for the pain.",
                "high",
                &["naproxen 500 mg"],
            ),
            silent("Stopped lisinopril, started ramipril 5 mg daily."),
            silent("Atorvastatin 40 mg nightly; Lipitor is well tolerated."),
            silent("Lisinopril 10 mg and amlodipine 5 mg daily."),
            silent("Aspirin 81 mg and clopidogrel 75 mg daily after the stent."),
            silent("Insulin glargine 20 units at night and insulin lispro with meals."),
        ],
    )
    .await;
}

#[tokio::test]
async fn doses_above_the_maximum_or_in_the_wrong_unit_fire() {
    run_rule(
        "DOSE_OUT_OF_RANGE",
        vec![
            fires(
                "Metformin 1000 mg three times a day.",
                "high",
                &["Metformin 1000 mg three times a day"],
            ),
            fires(
                "Start atorvastatin 800 mg daily.",
                "high",
                &["atorvastatin 800 mg daily"],
            ),
            fires(
                "Lisinopril 10 units daily.",
                "high",
                &["Lisinopril 10 units daily"],
            ),
            fires(
                "Insulin glargine 20 mg at night.",
                "high",
                &["Insulin glargine 20 mg at night"],
            ),
            fires(
                "Acetaminophen 1 g every 4 hours.",
                "high",
                &["Acetaminophen 1 g every 4 hours"],
            ),
            fires(
                "Amlodipine twenty milligrams daily.",
                "high",
                &["Amlodipine twenty milligrams daily"],
            ),
            // Warfarin has no sourced maximum: no dose of it is checked.
            silent("Give 5 grams of warfarin."),
            silent("Metformin 500 mg twice daily."),
            silent("Aspirin eighty one milligrams daily."),
            silent("Acetaminophen 1 g four times a day."),
            silent("Insulin glargine 20 units at night."),
            silent("Amoxicillin 500 mg three times a day."),
            silent("Stopped metformin 1000 mg three times a day."),
        ],
    )
    .await;
}

#[tokio::test]
async fn sepsis_without_an_antibiotic_fires_unless_negated_or_treated() {
    run_rule(
        "SEPSIS_NO_ANTIBIOTIC",
        vec![
            fires(
                "Impression: sepsis from a urinary source. Start IV fluids.",
                "high",
                &["sepsis"],
            ),
            fires("Septic shock, on noradrenaline.", "high", &["Septic shock"]),
            silent("Sepsis; started ceftriaxone 2 g IV daily."),
            silent("No signs of sepsis."),
            silent("Sepsis was ruled out."),
            silent("Patient is not septic."),
            with(
                silent("Urosepsis."),
                json!({"medications": ["piperacillin tazobactam"]}),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn identifiers_in_the_text_fire_written_or_spoken() {
    run_rule(
        "PII_IDENTIFIER",
        vec![
            fires(
                "Medicare number 2123 45670 1.",
                "critical",
                &["2123 45670 1"],
            ),
            fires("Medicare 2123456701 on file.", "critical", &["2123456701"]),
            fires("SSN 123-45-6789.", "critical", &["123-45-6789"]),
            fires(
                "Her Medicare number is two one two three four five six seven zero one.",
                "critical",
                &["two one two three four five six seven zero one"],
            ),
            fires(
                "Social security one two three, four five, six seven eight nine.",
                "critical",
                &["one two three, four five, six seven eight nine"],
            ),
            silent("BP 140/90, pulse 88, weight 70 kg."),
            silent("Aspirin 81 mg daily. Review on 2026-12-08."),
            silent("Call extension 555 1234."),
            silent("One two three steps, then rest."),
        ],
    )
    .await;
}

#[tokio::test]
async fn dates_outside_the_encounter_fire() {
    let admitted = json!({"admission_date": "2026-11-30"});
    run_rule(
        "DATE_OUTSIDE_ENCOUNTER",
        vec![
            with(
                fires("Fell three days ago.", "medium", &["three days ago"]),
                admitted.clone(),
            ),
            fires(
                "Seen in clinic on 15 December 2026.",
                "medium",
                &["15 December 2026"],
            ),
            fires("Last dose 2027-01-05.", "medium", &["2027-01-05"]),
            with(
                silent("Admitted yesterday with chest pain."),
                admitted.clone(),
            ),
            silent("Review in two weeks."),
            silent("Fell three days ago."),
            silent("Seen on November 20th."),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_fact_the_text_does_not_contain_is_unsupported() {
    use clinscribe::guardrails::model::{Medication, MedicationStatus};
    let guardrails = clinscribe::guardrails::Guardrails::built_in().unwrap();
    let text = "Continue metformin 500 mg twice daily.";
    let on = time::macros::date!(2026 - 12 - 01);
    let mut extracted = guardrails
        .verify(text, &Default::default())
        .await
        .unwrap()
        .extracted;
    assert_eq!(extracted.medications.len(), 1);
    extracted.medications.push(Medication {
        text: "warfarin".into(),
        generic: "warfarin".into(),
        dose: Some(5.0),
        unit: Some("mg".into()),
        frequency: None,
        per_day: None,
        route: None,
        status: MedicationStatus::Continued,
        span: None,
    });
    let result = guardrails.check(text, extracted, &Default::default(), on);
    let unsupported: Vec<_> = result
        .alerts
        .iter()
        .filter(|a| a.rule_id == "UNSUPPORTED_BY_TRANSCRIPT")
        .collect();
    assert_eq!(unsupported.len(), 1);
    assert_eq!(unsupported[0].severity.as_str(), "high");
    assert!(unsupported[0].message.contains("warfarin"));
    assert!(!result.passed);

    let clean = guardrails.verify(text, &Default::default()).await.unwrap();
    assert!(clean.alerts.is_empty(), "{:?}", clean.alerts);
    assert!(clean.passed);
    assert_eq!(clean.score, 1.0);
}

fn medication<'a>(result: &'a Value, generic: &str) -> &'a Value {
    result["extracted"]["medications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["generic"] == generic)
        .unwrap_or_else(|| panic!("no {generic} in {result:#}"))
}

/// text, generic, dose, unit, frequency, per_day, route, status
type SpokenMedication = (
    &'static str,
    &'static str,
    f64,
    &'static str,
    &'static str,
    f64,
    Option<&'static str>,
    &'static str,
);

#[tokio::test]
async fn spoken_doses_frequencies_and_routes_are_read() {
    let app = TestApp::new().await;
    // text, generic, dose, unit, frequency, per_day, route, status
    let cases: &[SpokenMedication] = &[
        (
            "Aspirin eighty one milligrams daily.",
            "aspirin",
            81.0,
            "mg",
            "once daily",
            1.0,
            None,
            "continued",
        ),
        (
            "Metoprolol twenty five mg b.i.d.",
            "metoprolol",
            25.0,
            "mg",
            "twice daily",
            2.0,
            None,
            "continued",
        ),
        (
            "Start amoxicillin five hundred milligrams three times a day by mouth.",
            "amoxicillin",
            500.0,
            "mg",
            "3 times daily",
            3.0,
            Some("oral"),
            "started",
        ),
        (
            "Paracetamol one gram every six hours as needed.",
            "acetaminophen",
            1.0,
            "g",
            "every 6 hours",
            4.0,
            None,
            "continued",
        ),
        (
            "Prednisone two and a half milligrams daily.",
            "prednisone",
            2.5,
            "mg",
            "once daily",
            1.0,
            None,
            "continued",
        ),
        (
            "Continue Lipitor 40 mg at bedtime.",
            "atorvastatin",
            40.0,
            "mg",
            "at night",
            1.0,
            None,
            "continued",
        ),
        (
            "Enoxaparin 40 mg subcutaneously once a day.",
            "enoxaparin",
            40.0,
            "mg",
            "once daily",
            1.0,
            Some("subcutaneous"),
            "continued",
        ),
        (
            "Ceftriaxone one gram IV q24h.",
            "ceftriaxone",
            1.0,
            "g",
            "every 24 hours",
            1.0,
            Some("intravenous"),
            "continued",
        ),
        (
            "Alendronate 70 mg once weekly.",
            "alendronate",
            70.0,
            "mg",
            "weekly",
            1.0 / 7.0,
            None,
            "continued",
        ),
        (
            "Stopped simvastatin 40 mg nightly.",
            "simvastatin",
            40.0,
            "mg",
            "at night",
            1.0,
            None,
            "stopped",
        ),
        (
            "No longer taking lisinopril 10 mg daily.",
            "lisinopril",
            10.0,
            "mg",
            "once daily",
            1.0,
            None,
            "stopped",
        ),
        (
            "Metformin 500 mg twice a day was discontinued.",
            "metformin",
            500.0,
            "mg",
            "twice daily",
            2.0,
            None,
            "stopped",
        ),
        (
            "Salbutamol 2 puffs four times a day as needed.",
            "albuterol",
            2.0,
            "puff",
            "4 times daily",
            4.0,
            None,
            "continued",
        ),
    ];
    for (text, generic, dose, unit, frequency, per_day, route, status) in cases {
        let result = verify(&app, text, json!({})).await;
        let m = medication(&result, generic);
        assert_eq!(m["dose"].as_f64(), Some(*dose), "{text}");
        assert_eq!(m["unit"], *unit, "{text}");
        assert_eq!(m["frequency"], *frequency, "{text}");
        assert!(
            (m["per_day"].as_f64().unwrap() - per_day).abs() < 1e-9,
            "{text}"
        );
        assert_eq!(m["route"].as_str(), *route, "{text}");
        assert_eq!(m["status"], *status, "{text}");
        let span = &m["span"];
        let chars: Vec<char> = text.chars().collect();
        let said: String = chars
            [span["start"].as_u64().unwrap() as usize..span["end"].as_u64().unwrap() as usize]
            .iter()
            .collect();
        assert!(
            said.to_lowercase()
                .contains(&m["text"].as_str().unwrap().to_lowercase()),
            "{text}: {said}"
        );
    }
    let negated = verify(&app, "Denies taking ibuprofen or aspirin.", json!({})).await;
    assert_eq!(negated["extracted"]["medications"], json!([]));
}

#[tokio::test]
async fn spoken_vital_signs_and_dates_are_read() {
    let app = TestApp::new().await;
    let cases: &[(&str, &str, f64, Option<f64>, &str)] = &[
        (
            "Blood pressure one hundred forty over ninety.",
            "blood_pressure",
            140.0,
            Some(90.0),
            "mmHg",
        ),
        (
            "BP one forty over ninety five.",
            "blood_pressure",
            140.0,
            Some(95.0),
            "mmHg",
        ),
        (
            "BP 120/80 mmHg.",
            "blood_pressure",
            120.0,
            Some(80.0),
            "mmHg",
        ),
        (
            "Temperature thirty eight point five.",
            "temperature",
            38.5,
            None,
            "Cel",
        ),
        ("Temp 101.2 F.", "temperature", 101.2, None, "[degF]"),
        (
            "Heart rate of one hundred and ten beats per minute.",
            "heart_rate",
            110.0,
            None,
            "/min",
        ),
        (
            "Sats ninety four percent on room air.",
            "oxygen_saturation",
            94.0,
            None,
            "%",
        ),
        ("SpO2 97%.", "oxygen_saturation", 97.0, None, "%"),
        (
            "Blood sugar twelve point four.",
            "glucose",
            12.4,
            None,
            "mmol/L",
        ),
        ("Glucose 180 mg/dL.", "glucose", 180.0, None, "mg/dL"),
        (
            "Respiratory rate twenty two.",
            "respiratory_rate",
            22.0,
            None,
            "/min",
        ),
        ("Weight 82 kg.", "weight", 82.0, None, "kg"),
    ];
    for (text, kind, value, diastolic, unit) in cases {
        let result = verify(&app, text, json!({})).await;
        let signs = result["extracted"]["vital_signs"].as_array().unwrap();
        assert_eq!(signs.len(), 1, "{text}: {signs:?}");
        assert_eq!(signs[0]["kind"], *kind, "{text}");
        assert!(
            (signs[0]["value"].as_f64().unwrap() - value).abs() < 1e-9,
            "{text}: {}",
            signs[0]
        );
        assert_eq!(signs[0]["diastolic"].as_f64(), *diastolic, "{text}");
        assert_eq!(signs[0]["unit"], *unit, "{text}");
    }
    let dates: &[(&str, &str, &str)] = &[
        ("Symptoms started three days ago.", "2026-11-28", "past"),
        ("Fell yesterday.", "2026-11-30", "past"),
        ("Seen last week.", "2026-11-24", "past"),
        ("Started two months ago.", "2026-10-01", "past"),
        ("Stopped a year ago.", "2025-12-01", "past"),
        ("Review in two weeks.", "2026-12-15", "plan"),
        ("Discharged on 30 November 2026.", "2026-11-30", "date"),
        ("Seen on November 20th.", "2026-11-20", "date"),
    ];
    for (text, date, relation) in dates {
        let result = verify(&app, text, json!({})).await;
        let times = result["extracted"]["times"].as_array().unwrap();
        assert_eq!(times.len(), 1, "{text}: {times:?}");
        assert_eq!(times[0]["date"], *date, "{text}");
        assert_eq!(times[0]["relation"], *relation, "{text}");
    }
}

#[tokio::test]
async fn allergies_conditions_and_their_negations_are_read() {
    let app = TestApp::new().await;
    let result = verify(
        &app,
        "Allergic to penicillin and sulfa; latex allergy. History of hypertension and type 2 diabetes. Denies chest pain. No fever.",
        json!({}),
    )
    .await;
    let substances: Vec<&str> = result["extracted"]["allergies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["substance"].as_str().unwrap())
        .collect();
    assert_eq!(substances, ["penicillin", "sulfonamide", "latex"]);
    let conditions: Vec<&str> = result["extracted"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(conditions, ["hypertension", "type 2 diabetes"]);
    assert_eq!(result["extracted"]["no_known_allergies"], false);
    assert_eq!(result["extracted"]["medications"], json!([]));

    let none = verify(&app, "No known drug allergies.", json!({})).await;
    assert_eq!(none["extracted"]["no_known_allergies"], true);
    assert_eq!(none["extracted"]["allergies"], json!([]));
}

#[tokio::test]
async fn the_result_has_the_original_keys_and_a_score() {
    let app = TestApp::new().await;
    // The example of docs/API.md.
    let example = verify(
        &app,
        "Allergic to penicillin. Start amoxicillin 500 mg three times a day.",
        json!({"allergies": ["penicillin"], "medications": ["warfarin"], "admission_date": "2026-11-30"}),
    )
    .await;
    assert_eq!(example["passed"], false);
    assert_eq!(example["score"], 0.6);
    assert_eq!(
        example["issues"],
        json!(["amoxicillin is prescribed, and the patient is allergic to penicillin"])
    );
    assert_eq!(
        example["alerts"][0]["evidence"],
        json!([{"start": 12, "end": 22, "text": "penicillin"},
               {"start": 30, "end": 66, "text": "amoxicillin 500 mg three times a day"}])
    );
    assert_eq!(
        example["extracted"]["medications"],
        json!([{"text": "amoxicillin", "generic": "amoxicillin", "dose": 500.0, "unit": "mg",
                "frequency": "3 times daily", "per_day": 3.0, "route": null, "status": "started",
                "span": {"start": 30, "end": 66}}])
    );
    let text = "Allergic to penicillin. Start amoxicillin 500 mg three times a day. Medicare number 2123 45670 1.";
    let result = verify(&app, text, json!({})).await;
    for key in [
        "passed",
        "score",
        "issues",
        "checks_performed",
        "alerts",
        "extracted",
        "engine",
        "ruleset_version",
    ] {
        assert!(result.get(key).is_some(), "{key} missing: {result:#}");
    }
    assert_eq!(result["passed"], false);
    assert_eq!(result["engine"], "embedded");
    // Two critical alerts at 0.4 each (rules.toml).
    assert!(
        (result["score"].as_f64().unwrap() - 0.2).abs() < 1e-9,
        "{}",
        result["score"]
    );
    assert_eq!(result["issues"].as_array().unwrap().len(), 2);
    assert_eq!(result["checks_performed"].as_array().unwrap().len(), 8);
    // An offset in code points: a multi-byte character before the drug.
    let accented = verify(
        &app,
        "Ménière's. Allergic to penicillin; amoxicillin 500 mg.",
        json!({}),
    )
    .await;
    assert_spans_match(
        "Ménière's. Allergic to penicillin; amoxicillin 500 mg.",
        &accented,
    );
    let alert = &alerts_of(&accented, "ALLERGY_CONFLICT")[0];
    assert_eq!(alert["evidence"][0]["start"], 23);
}

#[tokio::test]
async fn a_bad_verify_body_is_a_422_naming_every_problem() {
    let app = TestApp::new().await;
    let cases: &[(&str, &[(&str, Value)])] = &[
        ("{}", &[("missing", json!(["body", "text"]))]),
        (
            r#"{"text": 5}"#,
            &[("string_type", json!(["body", "text"]))],
        ),
        (
            r#"{"text": "x", "context": []}"#,
            &[("dict_type", json!(["body", "context"]))],
        ),
        (
            r#"{"text": "x", "context": {"allergy": ["penicillin"], "admission_date": "30/11/2026"}}"#,
            &[
                ("extra_forbidden", json!(["body", "context", "allergy"])),
                ("date_parsing", json!(["body", "context", "admission_date"])),
            ],
        ),
        (
            r#"{"text": "x", "context": {"medications": [1, ""]}}"#,
            &[("string_type", json!(["body", "context", "medications", 0]))],
        ),
    ];
    for (body, expected) in cases {
        let response = app.post_json("/api/v1/verify", body).await;
        assert_eq!(response.status, 422, "{body}: {}", response.text);
        let issues = response.body["detail"].as_array().unwrap();
        assert_eq!(issues.len(), expected.len(), "{body}: {issues:?}");
        for (kind, loc) in *expected {
            assert!(
                issues
                    .iter()
                    .any(|i| i["type"] == *kind && i["loc"] == *loc),
                "{body}: {issues:?}"
            );
        }
    }
    let too_long = json!({"text": "a".repeat(200_001)}).to_string();
    let response = app.post_json("/api/v1/verify", &too_long).await;
    assert_eq!(response.status, 422);
    assert_eq!(response.body["detail"][0]["type"], "string_too_long");
    let not_json = app.post_json("/api/v1/verify", "{not json").await;
    assert_eq!(not_json.status, 422, "{}", not_json.text);
    assert_eq!(not_json.body["detail"][0]["type"], "json_invalid");

    let signed_out = TestApp::new().await.with_auth_on();
    let response = signed_out
        .post_json("/api/v1/verify", r#"{"text": "x"}"#)
        .await;
    assert_eq!(response.status, 401);
}

/// A clinician's correction is checked and stored with its check, in the one
/// change the version counts; clearing the text (no engine text) clears it.
async fn a_corrected_text_is_checked_in_the_same_change(app: TestApp) {
    let created = app.create("patient-guardrails", 30).await;
    let id = created["id"].as_str().unwrap();
    assert!(created["verification_results"].is_null());
    let text = "Allergic to penicillin. Start amoxicillin 500 mg three times a day.";
    let typed = patch(
        &app,
        id,
        Some(&tag_of(&created)),
        json!({"final_transcript": text}),
    )
    .await;
    assert_eq!(typed.status, 200, "{}", typed.text);
    let body = &typed.body;
    assert_eq!(body["version"], created["version"].as_i64().unwrap() + 1);
    let check = &body["verification_results"];
    assert_eq!(check["passed"], false, "{check}");
    assert_eq!(check["alerts"][0]["rule_id"], "ALLERGY_CONFLICT");
    assert_eq!(
        check["alerts"][0]["evidence"][1]["text"],
        "amoxicillin 500 mg three times a day"
    );
    assert_eq!(body["verification_score"], 0.6);
    assert_eq!(body["verified_at"], body["extraction_completed_at"]);
    assert!(body["verified_at"].is_string());
    assert_eq!(current(&app, id).await["verification_results"], *check);

    // Another field changes: the check stays.
    let moved = patch(
        &app,
        id,
        Some(&tag_of(body)),
        json!({"patient_id": "patient-other"}),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(moved.body["verification_results"], *check);

    let cleared = patch(
        &app,
        id,
        Some(&tag_of(&moved.body)),
        json!({"final_transcript": null}),
    )
    .await;
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    for field in ["verification_results", "verification_score", "verified_at"] {
        assert!(
            cleared.body[field].is_null(),
            "{field}: {}",
            cleared.body[field]
        );
    }
}

/// The facts of a note, as `fhir_bundle` holds them, validated as FHIR R4 by
/// the fhir.resources package's models (scripts/fhir-validate).
fn validate_fhir(bundles: &[&Value]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = bundles
        .iter()
        .enumerate()
        .map(|(n, bundle)| {
            let path = dir.path().join(format!("bundle-{n}.json"));
            std::fs::write(&path, bundle.to_string()).unwrap();
            path.display().to_string()
        })
        .collect();
    let out = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/fhir-validate"
    ))
    .args(&paths)
    .output()
    .expect("run scripts/fhir-validate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "not valid FHIR R4:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The resources of a bundle by type, in order.
fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// Every check stores its facts as a FHIR R4 Bundle about the recording's
/// patient; changing the patient makes it again.
async fn the_facts_of_a_note_are_stored_as_a_valid_fhir_bundle(app: TestApp) {
    let created = app.create("patient-fhir", 30).await;
    let id = created["id"].as_str().unwrap();
    let text = "Allergic to penicillin. History of hypertension. Started lisinopril 10 mg once daily \
                by mouth. Stopped ibuprofen. Blood pressure 150 over 95, heart rate 88, temperature \
                38.2, oxygen saturation 94 percent, blood glucose 7.8 mmol per litre, weight 82 kg.";
    let noted = patch(
        &app,
        id,
        Some(&tag_of(&created)),
        json!({"final_transcript": text}),
    )
    .await;
    assert_eq!(noted.status, 200, "{}", noted.text);
    let bundle = &noted.body["fhir_bundle"];
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    assert_eq!(bundle["identifier"]["value"], format!("urn:uuid:{id}"));

    let medications = resources(bundle, "MedicationStatement");
    let named: Vec<(&str, &str)> = medications
        .iter()
        .map(|m| {
            (
                m["medicationCodeableConcept"]["text"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(named, [("lisinopril", "active"), ("ibuprofen", "stopped")]);
    let dose = &medications[0]["dosage"][0];
    assert_eq!(
        dose["doseAndRate"][0]["doseQuantity"],
        json!({"value": 10.0, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"})
    );
    assert_eq!(
        dose["timing"]["repeat"],
        json!({"frequency": 1, "period": 1, "periodUnit": "d"})
    );
    assert_eq!(
        medications[0]["subject"]["identifier"]["value"],
        "patient-fhir"
    );

    let allergies = resources(bundle, "AllergyIntolerance");
    assert_eq!(allergies.len(), 1);
    assert_eq!(allergies[0]["code"]["text"], "penicillin");
    assert_eq!(
        allergies[0]["patient"]["identifier"]["value"],
        "patient-fhir"
    );
    let conditions = resources(bundle, "Condition");
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0]["code"]["text"], "hypertension");

    let observations: Vec<(&str, &str)> = resources(bundle, "Observation")
        .iter()
        .map(|o| {
            (
                o["code"]["coding"][0]["code"].as_str().unwrap(),
                o["category"][0]["coding"][0]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        observations,
        [
            ("85354-9", "vital-signs"),
            ("8867-4", "vital-signs"),
            ("8310-5", "vital-signs"),
            ("59408-5", "vital-signs"),
            ("15074-8", "laboratory"),
            ("29463-7", "vital-signs"),
        ]
    );
    let pressure = resources(bundle, "Observation")[0];
    let components: Vec<(&str, f64)> = pressure["component"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["code"]["coding"][0]["code"].as_str().unwrap(),
                c["valueQuantity"]["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(components, [("8480-6", 150.0), ("8462-4", 95.0)]);
    assert_eq!(pressure["component"][0]["valueQuantity"]["code"], "mm[Hg]");

    // Filed under another patient: the bundle names the new one.
    let moved = patch(
        &app,
        id,
        Some(&tag_of(&noted.body)),
        json!({"patient_id": "patient-moved"}),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let moved_bundle = &moved.body["fhir_bundle"];
    assert_eq!(
        resources(moved_bundle, "Condition")[0]["subject"]["identifier"]["value"],
        "patient-moved"
    );
    assert_eq!(current(&app, id).await["fhir_bundle"], *moved_bundle);

    // No known allergies is a coded statement of its own.
    let other = app.create("patient-fhir-2", 30).await;
    let other_id = other["id"].as_str().unwrap();
    let none = patch(
        &app,
        other_id,
        Some(&tag_of(&other)),
        json!({"final_transcript": "No known allergies. Continue atorvastatin 40 mg at night."}),
    )
    .await;
    assert_eq!(none.status, 200, "{}", none.text);
    let nka = &none.body["fhir_bundle"];
    let coded = &resources(nka, "AllergyIntolerance")[0]["code"]["coding"][0];
    assert_eq!(coded["system"], "http://snomed.info/sct");
    assert_eq!(coded["code"], "716186003");

    let report = validate_fhir(&[bundle, moved_bundle, nka]);
    assert!(
        report.contains("valid collection of 10: MedicationStatement MedicationStatement AllergyIntolerance Condition Observation"),
        "{report}"
    );
    assert!(
        report.contains("valid collection of 2: MedicationStatement AllergyIntolerance"),
        "{report}"
    );
}

crate::on_both_backends!(
    a_corrected_text_is_checked_in_the_same_change,
    the_facts_of_a_note_are_stored_as_a_valid_fhir_bundle,
);
