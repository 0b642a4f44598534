//! What a stream carries, read from its FLV tags for listings: codec names, and from the
//! decoder configuration records (the sequence headers) the picture size, profile and level of
//! H.264 video (its SPS) and the sample rate and channels of AAC audio (its
//! AudioSpecificConfig).
//!
//! Like the parser, nothing here trusts its input: every read is bounds-checked, an
//! Exp-Golomb code longer than 32 bits is refused, and whatever cannot be read is `None` rather
//! than a guess.

use crate::{SOUND_FORMAT_AAC, VIDEO_CODEC_AVC, VIDEO_CODEC_HEVC, VIDEO_EX_HEADER};

/// What a video track is, as far as its tags tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoInfo {
    /// `h264`, `hevc`, `av1`, `vp9`, `vp6`, `h263`, … (`unknown` for codec ids we do not name).
    pub codec: &'static str,
    /// Profile name (`Baseline`, `Main`, `High`, …) when the configuration record was read.
    pub profile: Option<&'static str>,
    /// Level as written (`3.1`, `4`), when known.
    pub level: Option<String>,
    /// Displayed picture size (after cropping), when the SPS was read.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// What an audio track is, as far as its tags tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// `aac`, `mp3`, `opus`, `pcm`, `g711a`, … (`unknown` for formats we do not name).
    pub codec: &'static str,
    /// Samples per second, from the AudioSpecificConfig for AAC, else from the tag flags.
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
}

/// Describes a video track from the data of its latest tag (`head`: at least the first byte;
/// five for enhanced-RTMP tags) and, if cached, its sequence header's data.
pub fn video_info(head: &[u8], sequence: Option<&[u8]>) -> Option<VideoInfo> {
    let from = sequence.filter(|s| !s.is_empty()).unwrap_or(head);
    let first = *from.first()?;
    let (codec, record) = if first & VIDEO_EX_HEADER != 0 {
        // Enhanced RTMP: packet type in the low nibble (0 = SequenceStart), FourCC next, and a
        // SequenceStart carries the configuration record right after it.
        let fourcc = from.get(1..5)?;
        let codec = match fourcc {
            b"avc1" => "h264",
            b"hvc1" => "hevc",
            b"av01" => "av1",
            b"vp09" => "vp9",
            _ => "unknown",
        };
        let record = (first & 0x0F == 0).then(|| &from[5..]);
        (codec, record)
    } else {
        let codec = match first & 0x0F {
            2 => "h263",
            3 => "screen",
            4 => "vp6",
            5 => "vp6a",
            6 => "screen2",
            VIDEO_CODEC_AVC => "h264",
            VIDEO_CODEC_HEVC => "hevc",
            _ => "unknown",
        };
        // AVC/HEVC packet type 0 is the configuration record, after a 3-byte composition time.
        let record = (matches!(first & 0x0F, VIDEO_CODEC_AVC | VIDEO_CODEC_HEVC)
            && from.get(1) == Some(&0))
        .then(|| from.get(5..))
        .flatten();
        (codec, record)
    };
    let mut info = VideoInfo {
        codec,
        profile: None,
        level: None,
        width: None,
        height: None,
    };
    match (codec, record) {
        ("h264", Some(r)) => {
            if let Some(sps) = avc_record_sps(r).and_then(parse_sps) {
                info.profile = Some(sps.profile_name());
                info.level = Some(sps.level_text());
                info.width = Some(sps.width);
                info.height = Some(sps.height);
            }
        }
        ("hevc", Some(r)) if r.len() >= 13 => {
            // HEVCDecoderConfigurationRecord: general_profile_idc in byte 1, level in byte 12.
            info.profile = Some(match r[1] & 0x1F {
                1 => "Main",
                2 => "Main 10",
                3 => "Main Still Picture",
                4 => "Range Extensions",
                _ => "other",
            });
            info.level = Some(level_text(u32::from(r[12]), 30));
        }
        _ => {}
    }
    Some(info)
}

/// Describes an audio track from the data of its latest tag and, for AAC, its sequence
/// header's data.
pub fn audio_info(head: &[u8], sequence: Option<&[u8]>) -> Option<AudioInfo> {
    let first = *head.first().or(sequence.and_then(|s| s.first()))?;
    let format = first >> 4;
    if format == 9 {
        // Enhanced RTMP audio: a FourCC instead of flags.
        let codec = match head.get(1..5) {
            Some(b"Opus") => "opus",
            Some(b"fLaC") => "flac",
            Some(b"ac-3") => "ac3",
            Some(b"ec-3") => "eac3",
            Some(b"mp4a") => "aac",
            Some(b".mp3") => "mp3",
            _ => "unknown",
        };
        return Some(AudioInfo {
            codec,
            sample_rate: None,
            channels: None,
        });
    }
    let codec = match format {
        0 | 3 => "pcm",
        1 => "adpcm",
        2 | 14 => "mp3",
        4..=6 => "nellymoser",
        7 => "g711a",
        8 => "g711u",
        SOUND_FORMAT_AAC => "aac",
        11 => "speex",
        _ => "unknown",
    };
    if format == SOUND_FORMAT_AAC {
        // The FLV flags of AAC always say 44.1 kHz stereo; the AudioSpecificConfig is the truth.
        let asc = sequence
            .filter(|s| s.get(1) == Some(&0))
            .and_then(|s| s.get(2..))
            .and_then(parse_audio_specific_config);
        return Some(AudioInfo {
            codec,
            sample_rate: asc.map(|a| a.0),
            channels: asc.and_then(|a| a.1),
        });
    }
    let sample_rate = match format {
        14 => 8000,
        5 => 8000,
        4 => 16000,
        7 | 8 => 8000,
        11 => 16000,
        _ => [5512, 11025, 22050, 44100][usize::from((first >> 2) & 3)],
    };
    Some(AudioInfo {
        codec,
        sample_rate: Some(sample_rate),
        channels: Some(if first & 1 == 1 { 2 } else { 1 }),
    })
}

/// Sampling frequencies by `samplingFrequencyIndex` (ISO 14496-3, 1.6.3.4).
const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Sample rate and channel count (`None` for channel configuration 0: defined in-band) from an
/// AAC AudioSpecificConfig.
pub fn parse_audio_specific_config(asc: &[u8]) -> Option<(u32, Option<u8>)> {
    let mut r = BitReader::new(asc);
    let mut object_type = r.bits(5)?;
    if object_type == 31 {
        object_type = 32 + r.bits(6)?;
    }
    let _ = object_type;
    let index = r.bits(4)?;
    let rate = if index == 15 {
        r.bits(24)?
    } else {
        *AAC_RATES.get(index as usize)?
    };
    let channels = match r.bits(4)? {
        0 => None,
        c @ 1..=6 => Some(c as u8),
        7 => Some(8),
        _ => None,
    };
    Some((rate, channels))
}

/// The first SPS NAL unit of an AVCDecoderConfigurationRecord.
pub fn avc_record_sps(record: &[u8]) -> Option<&[u8]> {
    // version(1) profile(1) compat(1) level(1) lengthSizeMinusOne(1) numOfSPS(1, low 5 bits)
    if record.first() != Some(&1) || record.get(5)? & 0x1F == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*record.get(6)?, *record.get(7)?]));
    record.get(8..8 + len)
}

/// What the listings need of an H.264 sequence parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    /// The constraint_set flags byte (constraint_set0_flag in the top bit).
    pub constraints: u8,
    pub level_idc: u8,
    /// Displayed size: coded macroblocks minus the frame cropping.
    pub width: u32,
    pub height: u32,
}

impl Sps {
    /// The profile's name as players and ffprobe print it.
    pub fn profile_name(&self) -> &'static str {
        let set1 = self.constraints & 0x40 != 0;
        let set3 = self.constraints & 0x10 != 0;
        match self.profile_idc {
            66 if set1 => "Constrained Baseline",
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 => "High",
            110 if set3 => "High 10 Intra",
            110 => "High 10",
            122 if set3 => "High 4:2:2 Intra",
            122 => "High 4:2:2",
            244 if set3 => "High 4:4:4 Intra",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            _ => "other",
        }
    }

    /// The level as written: `3.1`, `4`, or `1b`.
    pub fn level_text(&self) -> String {
        let set3 = self.constraints & 0x10 != 0;
        if self.level_idc == 9 || (self.level_idc == 11 && set3 && self.profile_idc == 66) {
            return "1b".into();
        }
        level_text(u32::from(self.level_idc), 10)
    }
}

fn level_text(idc: u32, per_unit: u32) -> String {
    let (major, minor) = (idc / per_unit, (idc % per_unit) * 10 / per_unit);
    if minor == 0 {
        format!("{major}")
    } else {
        format!("{major}.{minor}")
    }
}

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices (H.264 7.3.2.1.1).
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Parses an H.264 SPS NAL unit (header byte included, emulation prevention still in).
pub fn parse_sps(nal: &[u8]) -> Option<Sps> {
    if nal.first()? & 0x1F != 7 {
        return None;
    }
    let rbsp = unescape(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile_idc = r.bits(8)? as u8;
    let constraints = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        let _bit_depth_luma = r.ue()?;
        let _bit_depth_chroma = r.ue()?;
        let _qpprime_y_zero_transform_bypass = r.flag()?;
        if r.flag()? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = r.ue()?;
    match r.ue()? {
        0 => {
            let _log2_max_poc_lsb = r.ue()?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.flag()?;
            let _offset_for_non_ref_pic = r.se()?;
            let _offset_for_top_to_bottom_field = r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps_allowed = r.flag()?;
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_map_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.flag()?;
    }
    let _direct_8x8_inference = r.flag()?;
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let mut width = width_mbs.checked_mul(16)?;
    let mut height = height_map_units.checked_mul(16 * field_factor)?;
    if r.flag()? {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        // Crop units (7-19 .. 7-22): whole samples without chroma, else chroma samples.
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match chroma_array_type {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let crop_x = left.checked_add(right)?.checked_mul(unit_x)?;
        let crop_y = top.checked_add(bottom)?.checked_mul(unit_y)?;
        width = width.checked_sub(crop_x)?;
        height = height.checked_sub(crop_y)?;
    }
    if width == 0 || height == 0 {
        return None;
    }
    Some(Sps {
        profile_idc,
        constraints,
        level_idc,
        width,
        height,
    })
}

/// Reads past one scaling list (H.264 7.3.2.1.1.1): only its length depends on the values.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The RBSP of a NAL unit: every `00 00 03` loses its `03` (emulation prevention).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// MSB-first bit reader over a byte slice.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn flag(&mut self) -> Option<bool> {
        self.bit().map(|b| b == 1)
    }

    /// `n` ≤ 32 bits as an unsigned number.
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    /// Unsigned Exp-Golomb; codes over 32 bits are refused.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// Signed Exp-Golomb.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// SPS units x264 wrote (ffmpeg lavfi testsrc), with what ffprobe reports for them.
    #[test]
    fn sps_from_x264_match_ffprobe() {
        let cases = [
            // 1920x1080 High 4.0: coded 1088 rows, cropped by 8.
            (
                "67640028acd940780227e5c044000003000400000300c83c60c658",
                (1920, 1080, "High", "4"),
            ),
            // 1280x720 Constrained Baseline 3.1.
            (
                "6742c01fd9005005bb011000000300100000030320f1832480",
                (1280, 720, "Constrained Baseline", "3.1"),
            ),
            // 720x576 interlaced (frame_mbs_only = 0: heights count field pairs).
            (
                "6764001eacd940b424d8088000000300800000190f8a14cb",
                (720, 576, "High", "3"),
            ),
            // 642x362 4:4:4: crop units are whole samples.
            (
                "67f4001e919b281485fc7cf808800000030080000019078b16cb",
                (642, 362, "High 4:4:4 Predictive", "3"),
            ),
            // 854x480 4:2:2 10-bit: horizontal crop in pairs, vertical in rows.
            (
                "677a001eb6cd940d83de6f011000000300100000030320f162d960",
                (854, 480, "High 4:2:2", "3"),
            ),
        ];
        for (nal, (w, h, profile, level)) in cases {
            let sps = parse_sps(&hex(nal)).unwrap_or_else(|| panic!("{nal} parses"));
            assert_eq!((sps.width, sps.height), (w, h), "{nal}");
            assert_eq!(sps.profile_name(), profile, "{nal}");
            assert_eq!(sps.level_text(), level, "{nal}");
        }
    }

    /// Writes bits MSB first, for SPS the encoders at hand do not produce.
    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        n: usize,
    }

    impl BitWriter {
        fn bit(&mut self, b: u32) {
            if self.n.is_multiple_of(8) {
                self.out.push(0);
            }
            if b != 0 {
                *self.out.last_mut().expect("byte") |= 0x80 >> (self.n % 8);
            }
            self.n += 1;
        }
        fn bits(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.bit((v >> i) & 1);
            }
        }
        fn ue(&mut self, v: u32) {
            let x = v + 1;
            let len = 32 - x.leading_zeros();
            self.bits(0, len - 1);
            self.bits(x, len);
        }
        fn se(&mut self, v: i32) {
            self.ue(if v > 0 {
                2 * v as u32 - 1
            } else {
                (-2 * v) as u32
            });
        }
    }

    #[test]
    fn scaling_lists_and_poc_type_1_are_read_past() {
        let mut w = BitWriter::default();
        w.bits(0x67, 8);
        w.bits(100, 8); // High
        w.bits(0, 8);
        w.bits(41, 8);
        w.ue(0); // sps id
        w.ue(1); // 4:2:0
        w.ue(0);
        w.ue(0);
        w.bit(0);
        w.bit(1); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            w.bit(1);
            let size = if i < 6 { 16 } else { 64 };
            // Deltas that wander, then one that ends the list early (next = 0).
            for j in 0..size {
                if j == size - 3 {
                    let back = -((8 + j) % 256);
                    w.se(back);
                    break;
                }
                w.se(1);
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1); // pic_order_cnt_type 1
        w.bit(0);
        w.se(-2);
        w.se(3);
        w.ue(2);
        w.se(1);
        w.se(-1);
        w.ue(4); // max_num_ref_frames
        w.bit(0);
        w.ue(1920 / 16 - 1);
        w.ue(1088 / 16 - 1);
        w.bit(1); // frame_mbs_only
        w.bit(1);
        w.bit(1); // cropping
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(4);
        w.bit(1); // rbsp stop bit
        let sps = parse_sps(&w.out).expect("parses");
        assert_eq!((sps.width, sps.height), (1920, 1080));
        assert_eq!(sps.level_text(), "4.1");
    }

    #[test]
    fn emulation_prevention_is_removed_before_reading() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            [0, 0, 1, 0, 0, 0, 3]
        );
    }

    #[test]
    fn hostile_input_is_none_not_a_panic() {
        assert_eq!(parse_sps(&[]), None);
        assert_eq!(parse_sps(&[0x68, 1, 2, 3]), None, "not an SPS");
        assert_eq!(
            parse_sps(&[0x67, 100, 0, 30, 0, 0, 0, 0, 0]),
            None,
            "32 zeros"
        );
        assert_eq!(parse_sps(&[0x67, 66, 0]), None, "truncated");
        for n in 0..40 {
            let full = hex("67640028acd940780227e5c044000003000400000300c83c60c658");
            let _ = parse_sps(&full[..n.min(full.len())]);
        }
        assert_eq!(
            avc_record_sps(&[1, 100, 0, 40, 0xFF, 0xE1, 0, 200, 0x67]),
            None
        );
        assert_eq!(parse_audio_specific_config(&[0x12]), None);
    }

    #[test]
    fn aac_config_gives_rate_and_channels() {
        // AAC-LC, 44.1 kHz, mono: what media/make.sh encodes.
        assert_eq!(
            parse_audio_specific_config(&[0x12, 0x08]),
            Some((44100, Some(1)))
        );
        // AAC-LC, 48 kHz, stereo.
        assert_eq!(
            parse_audio_specific_config(&[0x11, 0x90]),
            Some((48000, Some(2)))
        );
        let info = audio_info(&[0xAF, 1, 9], Some(&[0xAF, 0, 0x11, 0x90])).expect("info");
        assert_eq!(
            info,
            AudioInfo {
                codec: "aac",
                sample_rate: Some(48000),
                channels: Some(2)
            }
        );
        // MP3 flags: 22 kHz (index 2), mono.
        let info = audio_info(&[0x2A], None).expect("info");
        assert_eq!(
            (info.codec, info.sample_rate, info.channels),
            ("mp3", Some(22050), Some(1))
        );
    }

    #[test]
    fn video_info_from_legacy_and_enhanced_sequence_headers() {
        let sps = hex("6742c01fd9005005bb011000000300100000030320f1832480");
        let mut record = vec![1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1];
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(&sps);
        record.extend_from_slice(&[1, 0, 4, 0x68, 0xCE, 0x3C, 0x80]);
        let mut legacy = vec![0x17, 0, 0, 0, 0];
        legacy.extend_from_slice(&record);
        let v = video_info(&[0x27, 1, 0, 0, 0], Some(&legacy)).expect("info");
        assert_eq!(
            (v.codec, v.width, v.height, v.profile),
            ("h264", Some(1280), Some(720), Some("Constrained Baseline"))
        );
        assert_eq!(v.level.as_deref(), Some("3.1"));
        let mut enhanced = vec![0x90];
        enhanced.extend_from_slice(b"avc1");
        enhanced.extend_from_slice(&record);
        let v = video_info(&[0x91, b'a', b'v', b'c', b'1'], Some(&enhanced)).expect("info");
        assert_eq!((v.codec, v.width), ("h264", Some(1280)));
        let v = video_info(&[0x92, b'a', b'v', b'0', b'1'], None).expect("info");
        assert_eq!((v.codec, v.width), ("av1", None));
        let v = video_info(&[0x92, b'x', b'x', b'x', b'x'], None).expect("info");
        assert_eq!(v.codec, "unknown");
        let v = video_info(&[0x22], None).expect("info");
        assert_eq!(v.codec, "h263");
        assert_eq!(video_info(&[], None), None);
    }
}
