//! Is it audio? The container's signature ("magic bytes") decides, not the
//! client's file name or Content-Type.

/// Bytes needed to recognise every supported container.
pub const SNIFF_LEN: usize = 12;

/// The MIME type of a supported audio container starting with `prefix`
/// (at least [`SNIFF_LEN`] bytes, or the whole file if shorter), or None.
pub fn audio_content_type(prefix: &[u8]) -> Option<&'static str> {
    match prefix {
        // EBML header: WebM (what MediaRecorder makes in Chrome and Firefox) or Matroska.
        [0x1A, 0x45, 0xDF, 0xA3, ..] => Some("audio/webm"),
        [b'O', b'g', b'g', b'S', ..] => Some("audio/ogg"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'A',
            b'V',
            b'E',
            ..,
        ] => Some("audio/wav"),
        // ISO base media (MP4/M4A: what Safari's MediaRecorder makes).
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => Some("audio/mp4"),
        [b'f', b'L', b'a', b'C', ..] => Some("audio/flac"),
        // MP3 with an ID3v2 tag, or starting at an MPEG audio frame sync.
        [b'I', b'D', b'3', ..] => Some("audio/mpeg"),
        [0xFF, second, ..] if second & 0xE0 == 0xE0 && second & 0x06 != 0 => Some("audio/mpeg"),
        _ => None,
    }
}

/// The file extension for a content type from [`audio_content_type`].
pub fn extension(content_type: &str) -> &'static str {
    match content_type {
        "audio/webm" => "webm",
        "audio/ogg" => "ogg",
        "audio/wav" => "wav",
        "audio/mp4" => "m4a",
        "audio/flac" => "flac",
        "audio/mpeg" => "mp3",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_container_and_nothing_else() {
        let cases: [(&[u8], Option<&str>); 11] = [
            (
                &[0x1A, 0x45, 0xDF, 0xA3, 1, 0, 0, 0, 0, 0, 0, 0],
                Some("audio/webm"),
            ),
            (b"OggS\0\x02\0\0\0\0\0\0", Some("audio/ogg")),
            (b"RIFF\x24\0\0\0WAVEfmt ", Some("audio/wav")),
            (b"\0\0\0\x20ftypM4A ", Some("audio/mp4")),
            (b"fLaC\0\0\0\x22\0\0\0\0", Some("audio/flac")),
            (b"ID3\x04\0\0\0\0\0\0\0\0", Some("audio/mpeg")),
            (
                &[0xFF, 0xFB, 0x90, 0x64, 0, 0, 0, 0, 0, 0, 0, 0],
                Some("audio/mpeg"),
            ),
            (b"RIFF\x24\0\0\0AVI LIST", None),
            (b"%PDF-1.7\n%\xE2\xE3", None),
            (b"<html><body>", None),
            (b"", None),
        ];
        for (bytes, expected) in cases {
            assert_eq!(audio_content_type(bytes), expected, "{bytes:?}");
        }
    }
}
