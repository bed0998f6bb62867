//! Audio pieces joined into one: WAV (one header, the PCM data of each piece in order, all of
//! one format), raw PCM and MP3 (concatenated: each is a sequence of frames). Other formats
//! (Opus, AAC, FLAC) carry per-file state and are not joined.

/// `parts` as one file of `format`; `None` when the format is not joinable or a WAV piece is
/// malformed or of another sample format than the first.
pub fn join(format: &str, parts: &[&[u8]]) -> Option<Vec<u8>> {
    match format {
        "wav" => join_wav(parts),
        "pcm" | "mp3" => Some(parts.concat()),
        _ => None,
    }
}

/// A WAV file's `fmt ` chunk body and its `data`.
fn read_wav(file: &[u8]) -> Option<(&[u8], &[u8])> {
    if file.len() < 12 || &file[..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return None;
    }
    let (mut fmt, mut at) = (None, 12);
    while at + 8 <= file.len() {
        let id = &file[at..at + 4];
        let size = u32::from_le_bytes(file[at + 4..at + 8].try_into().ok()?) as usize;
        let body_start = at + 8;
        // A data chunk whose size says "unknown" (a streamed WAV: 0 or 0xFFFFFFFF), or runs
        // past the file, runs to its end.
        let body_end = match body_start.checked_add(size) {
            _ if id == b"data" && (size == 0 || size == 0xFFFF_FFFF) => file.len(),
            Some(end) if end <= file.len() => end,
            _ if id == b"data" => file.len(),
            _ => return None,
        };
        let body = &file[body_start..body_end];
        match id {
            b"fmt " => fmt = Some(body),
            b"data" => return Some((fmt?, body)),
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body_end + (size & 1);
    }
    None
}

fn join_wav(parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut fmt: Option<&[u8]> = None;
    let mut data = Vec::new();
    for part in parts {
        let (f, d) = read_wav(part)?;
        match fmt {
            None => fmt = Some(f),
            Some(first) if first != f => return None,
            Some(_) => {}
        }
        data.extend_from_slice(d);
    }
    let fmt = fmt?;
    let pad = data.len() & 1;
    let riff_size = 4 + (8 + fmt.len() + (fmt.len() & 1)) + (8 + data.len() + pad);
    let mut out = Vec::with_capacity(8 + riff_size);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&u32::try_from(riff_size).ok()?.to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    out.extend_from_slice(fmt);
    if fmt.len() & 1 == 1 {
        out.push(0);
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
    out.extend_from_slice(&data);
    if pad == 1 {
        out.push(0);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCM16 mono WAV at `rate` holding `samples`.
    fn wav(rate: u32, samples: &[u8]) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * 2).to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&((4 + 8 + fmt.len() + 8 + samples.len()) as u32).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        // A chunk readers skip, as some encoders write.
        out.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        out.extend_from_slice(&fmt);
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
        out.extend_from_slice(samples);
        out
    }

    #[test]
    fn wav_pieces_join_under_one_header_with_their_data_in_order() {
        let (a, b) = (wav(32000, &[1, 0, 2, 0]), wav(32000, &[3, 0]));
        let joined = join("wav", &[&a, &b]).unwrap();
        let (fmt, data) = read_wav(&joined).unwrap();
        assert_eq!(data, [1, 0, 2, 0, 3, 0]);
        assert_eq!(fmt, read_wav(&a).unwrap().0);
        let riff = u32::from_le_bytes(joined[4..8].try_into().unwrap()) as usize;
        assert_eq!(riff + 8, joined.len(), "the RIFF size covers the file");
    }

    #[test]
    fn other_rates_malformed_pieces_and_stateful_formats_are_not_joined() {
        assert!(join("wav", &[&wav(32000, &[1, 0]), &wav(24000, &[1, 0])]).is_none());
        assert!(join("wav", &[&wav(32000, &[1, 0]), b"ID3 not a wav"]).is_none());
        assert!(join("wav", &[b"RIFF\xff\xff\xff\xffWAVEfmt \xff\xff\xff\xff"]).is_none());
        assert!(join("opus", &[b"a", b"b"]).is_none());
        assert_eq!(join("mp3", &[b"ab", b"c"]).unwrap(), b"abc");
        // A streamed WAV says its data's size is unknown: its data runs to the end.
        let mut streamed = wav(32000, &[5, 0, 6, 0]);
        let at = streamed.len() - 4 - 4;
        streamed[at..at + 4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(read_wav(&join("wav", &[&streamed, &streamed]).unwrap()).unwrap().1, [5, 0, 6, 0, 5, 0, 6, 0]);
    }
}
