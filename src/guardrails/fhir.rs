//! The extracted facts as a FHIR R4 Bundle (`fhir_bundle`): a `collection`
//! of MedicationStatement, AllergyIntolerance, Condition and Observation
//! resources about the recording's patient. The codes (LOINC for the vital
//! signs, UCUM for units, SNOMED CT for "no known allergy", HL7's code
//! systems for statuses and categories) and where each comes from are listed
//! in docs/API.md ("FHIR bundle").
//!
//! The patient is referred to by identifier (the recording's `patient_id`),
//! not by a Patient resource: the server holds no demographics.

use serde_json::{Value, json};
use time::Date;
use uuid::Uuid;

use super::model::{Extracted, Medication, MedicationStatus, VitalSign};

const UCUM: &str = "http://unitsofmeasure.org";
const LOINC: &str = "http://loinc.org";

/// Whom and when the facts are about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The recording they were dictated in.
    pub recording_id: Uuid,
    /// The patient (`patient_id`).
    pub patient_id: &'a str,
    /// The day of the encounter (the recording's day).
    pub on: Date,
}

/// `facts` as a FHIR R4 Bundle of type `collection`.
pub fn bundle(facts: &Extracted, subject: &Subject<'_>) -> Value {
    let patient = json!({"type": "Patient", "identifier": {"value": subject.patient_id}});
    let on = subject.on.to_string();
    let mut resources = Vec::new();
    resources.extend(
        facts
            .medications
            .iter()
            .map(|m| medication_statement(m, &patient, &on)),
    );
    resources.extend(
        facts
            .allergies
            .iter()
            .map(|a| allergy_intolerance(&patient, &on, json!({"text": a.substance}), "active")),
    );
    if facts.no_known_allergies && facts.allergies.is_empty() {
        resources.push(allergy_intolerance(
            &patient,
            &on,
            json!({
                "coding": [{
                    "system": "http://snomed.info/sct",
                    "code": "716186003",
                    "display": "No known allergy"
                }],
                "text": "no known allergies"
            }),
            "active",
        ));
    }
    resources.extend(facts.conditions.iter().map(|c| {
        json!({
            "resourceType": "Condition",
            "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "code": {"text": c.name},
            "subject": patient,
            "recordedDate": on,
        })
    }));
    resources.extend(
        facts
            .vital_signs
            .iter()
            .filter_map(|v| observation(v, &patient, &on)),
    );
    json!({
        "resourceType": "Bundle",
        "identifier": {
            "system": "urn:ietf:rfc:3986",
            "value": format!("urn:uuid:{}", subject.recording_id),
        },
        "type": "collection",
        "entry": resources
            .into_iter()
            .map(|resource| json!({"resource": resource}))
            .collect::<Vec<_>>(),
    })
}

/// `{"coding": [{system, code}]}`.
fn coded(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

fn allergy_intolerance(patient: &Value, on: &str, code: Value, status: &str) -> Value {
    json!({
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", status),
        "code": code,
        "patient": patient,
        "recordedDate": on,
    })
}

/// The UCUM code of a dose unit, when it has one.
fn dose_ucum(unit: &str) -> Option<&'static str> {
    match unit {
        "mg" => Some("mg"),
        "mcg" => Some("ug"),
        "g" => Some("g"),
        "ml" => Some("mL"),
        "units" => Some("[iU]"),
        _ => None,
    }
}

fn medication_statement(m: &Medication, patient: &Value, on: &str) -> Value {
    let mut dosage = serde_json::Map::new();
    let said: Vec<String> = [
        m.dose
            .map(|d| format!("{d} {}", m.unit.as_deref().unwrap_or_default())),
        m.route.clone(),
        m.frequency.clone(),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.trim().to_owned())
    .collect();
    if !said.is_empty() {
        dosage.insert("text".into(), json!(said.join(" ")));
    }
    if let Some(route) = &m.route {
        dosage.insert("route".into(), json!({"text": route}));
    }
    if let Some(per_day) = m.per_day.filter(|n| n.fract() == 0.0 && *n >= 1.0) {
        dosage.insert(
            "timing".into(),
            json!({"repeat": {"frequency": per_day as u32, "period": 1, "periodUnit": "d"}}),
        );
    }
    if m.frequency.as_deref() == Some("as needed") {
        dosage.insert("asNeededBoolean".into(), json!(true));
    }
    if let Some(dose) = m.dose {
        let mut quantity = json!({"value": dose});
        if let Some(unit) = &m.unit {
            quantity["unit"] = json!(unit);
            if let Some(code) = dose_ucum(unit) {
                quantity["system"] = json!(UCUM);
                quantity["code"] = json!(code);
            }
        }
        dosage.insert("doseAndRate".into(), json!([{"doseQuantity": quantity}]));
    }
    let status = match m.status {
        MedicationStatus::Started | MedicationStatus::Continued => "active",
        MedicationStatus::Stopped => "stopped",
    };
    let mut statement = json!({
        "resourceType": "MedicationStatement",
        "status": status,
        "medicationCodeableConcept": {"text": m.generic},
        "subject": patient,
        "dateAsserted": on,
    });
    if !dosage.is_empty() {
        statement["dosage"] = json!([dosage]);
    }
    statement
}

/// The LOINC code, its display, the UCUM unit and the category of a vital
/// sign `kind` measured in `unit` (None for a unit without a code here).
fn vital_code(
    kind: &str,
    unit: &str,
) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
    Some(match (kind, unit) {
        ("blood_pressure", _) => (
            "85354-9",
            "Blood pressure panel with all children optional",
            "mm[Hg]",
            "vital-signs",
        ),
        ("heart_rate", _) => ("8867-4", "Heart rate", "/min", "vital-signs"),
        ("respiratory_rate", _) => ("9279-1", "Respiratory rate", "/min", "vital-signs"),
        ("temperature", "Cel") => ("8310-5", "Body temperature", "Cel", "vital-signs"),
        ("temperature", "[degF]") => ("8310-5", "Body temperature", "[degF]", "vital-signs"),
        ("oxygen_saturation", _) => (
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            "%",
            "vital-signs",
        ),
        ("weight", _) => ("29463-7", "Body weight", "kg", "vital-signs"),
        ("glucose", "mmol/L") => (
            "15074-8",
            "Glucose [Moles/volume] in Blood",
            "mmol/L",
            "laboratory",
        ),
        ("glucose", "mg/dL") => (
            "2339-0",
            "Glucose [Mass/volume] in Blood",
            "mg/dL",
            "laboratory",
        ),
        _ => return None,
    })
}

fn quantity(value: f64, ucum: &str) -> Value {
    json!({"value": value, "unit": ucum, "system": UCUM, "code": ucum})
}

fn loinc(code: &str, display: &str) -> Value {
    json!({"coding": [{"system": LOINC, "code": code, "display": display}], "text": display})
}

fn observation(v: &VitalSign, patient: &Value, on: &str) -> Option<Value> {
    let (code, display, ucum, category) = vital_code(&v.kind, &v.unit)?;
    let mut observation = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [coded("http://terminology.hl7.org/CodeSystem/observation-category", category)],
        "code": loinc(code, display),
        "subject": patient,
        "effectiveDateTime": on,
    });
    if v.kind == "blood_pressure" {
        let mut components = vec![json!({
            "code": loinc("8480-6", "Systolic blood pressure"),
            "valueQuantity": quantity(v.value, ucum),
        })];
        if let Some(diastolic) = v.diastolic {
            components.push(json!({
                "code": loinc("8462-4", "Diastolic blood pressure"),
                "valueQuantity": quantity(diastolic, ucum),
            }));
        }
        observation["component"] = json!(components);
    } else {
        observation["valueQuantity"] = quantity(v.value, ucum);
    }
    Some(observation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guardrails::Guardrails;

    #[test]
    fn a_note_becomes_one_resource_per_fact_with_its_codes() {
        let guardrails = Guardrails::built_in().unwrap();
        let on = time::macros::date!(2026 - 12 - 01);
        let text = "Allergic to penicillin. Started aspirin eighty one milligrams once daily. \
                    Blood pressure one hundred forty over ninety, heart rate 88. History of hypertension.";
        let facts = crate::guardrails::embedded::extract(guardrails.lexicon(), text, on);
        let subject = Subject {
            recording_id: Uuid::nil(),
            patient_id: "patient-1",
            on,
        };
        let bundle = bundle(&facts, &subject);
        let kinds: Vec<&str> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "MedicationStatement",
                "AllergyIntolerance",
                "Condition",
                "Observation",
                "Observation"
            ]
        );
        let aspirin = &bundle["entry"][0]["resource"];
        assert_eq!(aspirin["medicationCodeableConcept"]["text"], "aspirin");
        assert_eq!(
            aspirin["dosage"][0]["doseAndRate"][0]["doseQuantity"]["value"],
            81.0
        );
        assert_eq!(aspirin["dosage"][0]["timing"]["repeat"]["frequency"], 1);
        let pressure = &bundle["entry"][3]["resource"];
        assert_eq!(pressure["code"]["coding"][0]["code"], "85354-9");
        assert_eq!(pressure["component"][1]["valueQuantity"]["value"], 90.0);
        assert_eq!(pressure["subject"]["identifier"]["value"], "patient-1");
    }
}
