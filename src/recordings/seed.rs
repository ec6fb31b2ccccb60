//! Development and benchmark data: the original's five seed recordings, and a
//! generator of any number of realistic ones.

use serde_json::json;
use uuid::Uuid;

use super::model::{Recording, RecordingStatus};
use crate::auth::DEFAULT_CLINICIAN;
use crate::timestamp::Timestamp;

const TRANSCRIPT: &str = "reports mild headache for 2 days.\nPlan: paracetamol 500 mg PRN.";

/// The original seed script's five recordings, created at `now`.
pub fn development_recordings(now: Timestamp) -> Vec<Recording> {
    let rows = [
        ("clinician-001", 120, RecordingStatus::Pending),
        ("clinician-001", 180, RecordingStatus::Completed),
        ("clinician-002", 90, RecordingStatus::Error),
        ("clinician-002", 240, RecordingStatus::Processing),
        ("clinician-003", 300, RecordingStatus::Completed),
    ];
    let micros = now.unix_micros();
    rows.into_iter()
        .enumerate()
        .map(|(i, (clinician, duration, status))| {
            let n = i + 1;
            let patient_id = format!("patient-{n:03}");
            // A few milliseconds apart, so "newest first" has a defined order.
            let created_at = at(micros + i as i64 * 10_000);
            let done = status == RecordingStatus::Completed;
            Recording {
                id: Uuid::new_v4(),
                clinician_id: clinician.to_owned(),
                audio_file_path: Some(format!("/uploads/audio_{n:03}.webm")),
                audio_file_size: done.then_some(1_048_576),
                duration_seconds: Some(duration),
                status,
                error_message: (status == RecordingStatus::Error)
                    .then(|| "Transcription service timeout".to_owned()),
                retry_count: if status == RecordingStatus::Error { 3 } else { 0 },
                created_at,
                updated_at: created_at,
                uploaded_at: done.then(|| at(created_at.unix_micros() - 300_000_000)),
                processed_at: done.then_some(created_at),
                transcript: done.then(|| format!("Patient {patient_id} {TRANSCRIPT}")),
                verification_results: done.then(|| {
                    json!({"score": 0.93, "issues": [], "checked": ["dates", "drugs"], "note": "ok \u{2713}"})
                }),
                processing: Default::default(),
            version: 1,
            signoff: Default::default(),
                upload: Default::default(),
                patient_id,
            }
        })
        .collect()
}

fn at(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(micros).unwrap_or_else(Timestamp::now)
}

/// Clinicians of generated data; the API's fixed clinician is one of them, so
/// `GET /api/v1/recordings` sees its share.
pub const GENERATED_CLINICIANS: usize = 50;

const ERRORS: [&str; 4] = [
    "Transcription service timeout",
    "Audio too short to transcribe",
    "Verification service unavailable",
    "Unsupported audio codec",
];

const PHRASES: [&str; 6] = [
    "reports mild headache for 2 days. Plan: paracetamol 500 mg PRN.",
    "follow-up after knee surgery; wound healing well, sutures out next week.",
    "presents with productive cough, no fever. Chest clear. Advised fluids and rest.",
    "blood pressure 142/91, repeat in two weeks; continue lisinopril 10 mg daily.",
    "type 2 diabetes review: HbA1c 7.1 %, feet checked, no ulcers.",
    "anxiety symptoms improving on sertraline 50 mg; review in one month.",
];

/// Generates realistic recordings, oldest first, spread over the last two years,
/// [`GENERATED_CLINICIANS`] clinicians, `total / 20` patients and every status.
#[derive(Debug)]
pub struct Generator {
    rng: fastrand::Rng,
    total: u64,
    made: u64,
    start_micros: i64,
    span_micros: i64,
    patients: u64,
}

impl Generator {
    /// A generator of `total` recordings ending at `now`, reproducible for a given `seed`.
    pub fn new(total: u64, now: Timestamp, seed: u64) -> Self {
        let span_micros = 730 * 24 * 3600 * 1_000_000;
        Self {
            rng: fastrand::Rng::with_seed(seed),
            total,
            made: 0,
            start_micros: now.unix_micros() - span_micros,
            span_micros,
            patients: (total / 20).max(10),
        }
    }

    /// The next `n` recordings (fewer at the end).
    pub fn next_batch(&mut self, n: usize) -> Vec<Recording> {
        let n = n.min((self.total - self.made) as usize);
        (0..n).map(|_| self.next_recording()).collect()
    }

    fn next_recording(&mut self) -> Recording {
        let rng = &mut self.rng;
        // Evenly spaced with jitter: created_at increases, as in real life.
        let step = self.span_micros / self.total.max(1) as i64;
        let created_micros = self.start_micros + self.made as i64 * step + rng.i64(0..step.max(1));
        self.made += 1;
        let created_at = at(created_micros);
        let clinician = rng.usize(0..GENERATED_CLINICIANS);
        let clinician_id = if clinician == 0 {
            DEFAULT_CLINICIAN.to_owned()
        } else {
            format!("clinician-{clinician:03}")
        };
        let patient_id = format!("patient-{:06}", rng.u64(0..self.patients));
        let status = match rng.u8(0..100) {
            0..60 => RecordingStatus::Completed,
            60..70 => RecordingStatus::Pending,
            70..72 => RecordingStatus::Uploading,
            72..82 => RecordingStatus::Queued,
            82..90 => RecordingStatus::Processing,
            _ => RecordingStatus::Error,
        };
        let duration = rng.i64(10..900);
        let uploaded = !matches!(
            status,
            RecordingStatus::Pending | RecordingStatus::Uploading
        );
        let uploaded_at = uploaded.then(|| at(created_micros + rng.i64(1_000_000..600_000_000)));
        let processed_at = status
            .is_final()
            .then(|| at(created_micros + rng.i64(600_000_000..3_600_000_000)));
        let done = status == RecordingStatus::Completed;
        // A version 7 id (time-ordered, as the server makes them) whose random
        // bits come from the seeded generator: reproducible, and no system call.
        let mut random = [0; 10];
        random.copy_from_slice(&rng.u128(..).to_le_bytes()[..10]);
        let id = uuid::Builder::from_unix_timestamp_millis(
            u64::try_from(created_micros / 1000).unwrap_or_default(),
            &random,
        )
        .into_uuid();
        Recording {
            id,
            audio_file_path: Some(format!("/uploads/{}.webm", rng.u64(..))),
            audio_file_size: uploaded.then_some(duration * 16_000),
            duration_seconds: Some(duration),
            error_message: (status == RecordingStatus::Error)
                .then(|| ERRORS[rng.usize(0..ERRORS.len())].to_owned()),
            retry_count: if status == RecordingStatus::Error {
                rng.i64(1..4)
            } else {
                0
            },
            created_at,
            updated_at: processed_at.or(uploaded_at).unwrap_or(created_at),
            uploaded_at,
            processed_at,
            transcript: done.then(|| {
                format!(
                    "Patient {patient_id} {}",
                    PHRASES[rng.usize(0..PHRASES.len())]
                )
            }),
            verification_results: done.then(|| {
                json!({
                    "score": f64::from(rng.u8(70..100)) / 100.0,
                    "issues": [],
                    "checked": ["dates", "drugs", "dosages"],
                })
            }),
            processing: Default::default(),
            version: 1,
            signoff: Default::default(),
            upload: Default::default(),
            status,
            clinician_id,
            patient_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_development_recordings_as_the_original() {
        let rows = development_recordings(Timestamp::now());
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.patient_id.as_str(),
                    r.clinician_id.as_str(),
                    r.duration_seconds.unwrap(),
                    r.status,
                    r.audio_file_path.as_deref().unwrap(),
                )
            })
            .collect();
        use RecordingStatus::*;
        assert_eq!(
            summary,
            [
                (
                    "patient-001",
                    "clinician-001",
                    120,
                    Pending,
                    "/uploads/audio_001.webm"
                ),
                (
                    "patient-002",
                    "clinician-001",
                    180,
                    Completed,
                    "/uploads/audio_002.webm"
                ),
                (
                    "patient-003",
                    "clinician-002",
                    90,
                    Error,
                    "/uploads/audio_003.webm"
                ),
                (
                    "patient-004",
                    "clinician-002",
                    240,
                    Processing,
                    "/uploads/audio_004.webm"
                ),
                (
                    "patient-005",
                    "clinician-003",
                    300,
                    Completed,
                    "/uploads/audio_005.webm"
                ),
            ]
        );
        assert_eq!(
            rows[2].error_message.as_deref(),
            Some("Transcription service timeout")
        );
    }

    #[test]
    fn generator_is_ordered_and_covers_every_status() {
        let mut g = Generator::new(2000, Timestamp::now(), 7);
        let rows = g.next_batch(5000);
        assert_eq!(rows.len(), 2000);
        assert!(rows.windows(2).all(|w| w[0].created_at <= w[1].created_at));
        for status in RecordingStatus::ALL {
            assert!(rows.iter().any(|r| r.status == status), "{status}");
        }
        assert!(rows.iter().any(|r| r.clinician_id == DEFAULT_CLINICIAN));
        assert!(g.next_batch(10).is_empty());
    }

    #[test]
    fn generator_is_reproducible_with_time_ordered_ids() {
        let now = Timestamp::now();
        let first = Generator::new(1000, now, 11).next_batch(1000);
        assert_eq!(first, Generator::new(1000, now, 11).next_batch(1000));
        assert_ne!(first, Generator::new(1000, now, 12).next_batch(1000));
        assert!(first.iter().all(|r| r.id.get_version_num() == 7));
        assert!(first.windows(2).all(|w| w[0].id < w[1].id));
    }
}
