//! FLV codec: an incremental, zero-copy parser and the few builders a muxer needs.
//!
//! The live fan-out (origin and gateway hub) forwards tags unchanged to many viewers, so a tag is
//! kept as its exact on-wire bytes — 11-byte header, payload and trailing 4-byte PreviousTagSize
//! — in one refcounted [`Bytes`] split out of the input buffer. Forwarding a tag is a refcount
//! bump; the accessors ([`Tag::is_keyframe`], …) only peek at a few bytes.
//!
//! The parser never trusts the input: every field is checked before it is used, every error is
//! a typed [`FlvError`], and the amount it buffers is bounded by one maximal tag (the 24-bit
//! data size caps a tag at 11 + 16 MiB − 1 + 4 bytes; [`Parser::with_max_data_size`] lowers it).
//!
//! ```text
//! file    = header(9..) PreviousTagSize0(4, = 0) tag*
//! tag     = type(1) data_size(3) timestamp(3) timestamp_ext(1) stream_id(3) data(data_size)
//!           PreviousTagSize(4, = 11 + data_size)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub mod codec;

/// Length of the FLV file header proper (signature, version, flags, data offset).
pub const FILE_HEADER_LEN: usize = 9;
/// Length of a tag header (type, data size, timestamp, extended timestamp, stream id).
pub const TAG_HEADER_LEN: usize = 11;
/// Length of a PreviousTagSize field.
pub const PREV_TAG_SIZE_LEN: usize = 4;
/// Largest data size the 24-bit field can express; the default bound.
pub const MAX_DATA_SIZE: u32 = 0x00FF_FFFF;
/// Largest header data offset we accept. The spec says 9; anything far above that is garbage,
/// and accepting it would let the input make us skip (and buffer) arbitrary amounts.
pub const MAX_HEADER_SIZE: u32 = 1024;

/// The 13 bytes a muxer writes first: an FLV header announcing audio and video, followed by
/// PreviousTagSize0.
pub const FLV_HEADER: [u8; FILE_HEADER_LEN + PREV_TAG_SIZE_LEN] = file_header(true, true);

/// Builds the 9-byte FLV header plus the 4-byte PreviousTagSize0 (always zero).
pub const fn file_header(audio: bool, video: bool) -> [u8; FILE_HEADER_LEN + PREV_TAG_SIZE_LEN] {
    let flags = (if audio { 0x04 } else { 0 }) | (if video { 0x01 } else { 0 });
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Everything that makes an FLV byte stream unusable. After an error the parser stays failed:
/// resynchronising inside a corrupt stream would hand viewers garbage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("not an FLV stream: signature {0:02x?} is not \"FLV\"")]
    BadSignature([u8; 3]),
    #[error("FLV header size {0} is outside 9..={MAX_HEADER_SIZE}")]
    BadHeaderSize(u32),
    #[error("tag data size {size} exceeds the bound {max}")]
    DataTooLarge { size: u32, max: u32 },
    #[error("PreviousTagSize is {found}, expected {expected}")]
    PrevTagSizeMismatch { expected: u32, found: u32 },
    #[error("unknown tag type byte {0:#04x}")]
    UnknownTagType(u8),
    #[error("tag is filtered (encrypted), which is not supported")]
    Filtered,
    #[error("input ended inside a tag or header ({buffered} bytes left over)")]
    Truncated { buffered: usize },
    #[error("{buffered} bytes buffered without being parsed (bound {limit}); drain events before pushing more")]
    BufferFull { buffered: usize, limit: usize },
    #[error("{0} bytes follow the tag")]
    TrailingBytes(usize),
    #[error("tag payload of {0} bytes does not fit the 24-bit data size")]
    PayloadTooLarge(usize),
}

/// What a tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

impl TagKind {
    /// The tag type byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Self::Audio => 8,
            Self::Video => 9,
            Self::Script => 18,
        }
    }

    /// Decodes the first tag header byte (reserved bits and filter bit included).
    fn from_byte(b: u8) -> Result<Self, FlvError> {
        if b & 0x20 != 0 {
            return Err(FlvError::Filtered);
        }
        match b {
            8 => Ok(Self::Audio),
            9 => Ok(Self::Video),
            18 => Ok(Self::Script),
            other => Err(FlvError::UnknownTagType(other)),
        }
    }
}

/// The file header as found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The audio flag: the file announces audio tags.
    pub has_audio: bool,
    /// The video flag: the file announces video tags.
    pub has_video: bool,
    /// The header's on-wire bytes, PreviousTagSize0 included (13 bytes for any real file).
    pub bytes: Bytes,
}

/// One FLV tag, kept as its exact on-wire bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    kind: TagKind,
    timestamp: u32,
    /// Header + payload + PreviousTagSize. Invariant: len == 11 + data_size + 4, fields valid.
    bytes: Bytes,
}

/// Video codec ids whose second payload byte is an AVC-style packet type (0 = sequence header).
const VIDEO_CODEC_AVC: u8 = 7;
const VIDEO_CODEC_HEVC: u8 = 12;
/// Sound format whose second payload byte is an AAC packet type (0 = sequence header).
const SOUND_FORMAT_AAC: u8 = 10;
/// Enhanced-RTMP video: the top bit of the first byte marks an extended header whose low nibble
/// is the packet type (0 = SequenceStart) and bits 4..7 the frame type.
const VIDEO_EX_HEADER: u8 = 0x80;

impl Tag {
    /// Builds a tag from its parts (muxing).
    pub fn new(kind: TagKind, timestamp: u32, data: &[u8]) -> Result<Self, FlvError> {
        if data.len() > MAX_DATA_SIZE as usize {
            return Err(FlvError::PayloadTooLarge(data.len()));
        }
        let size = data.len() as u32;
        let mut b = BytesMut::with_capacity(TAG_HEADER_LEN + data.len() + PREV_TAG_SIZE_LEN);
        b.put_u8(kind.code());
        put_u24(&mut b, size);
        put_u24(&mut b, timestamp & 0x00FF_FFFF);
        b.put_u8((timestamp >> 24) as u8);
        put_u24(&mut b, 0);
        b.put_slice(data);
        b.put_u32(TAG_HEADER_LEN as u32 + size);
        Ok(Self {
            kind,
            timestamp,
            bytes: b.freeze(),
        })
    }

    /// Validates `bytes` as exactly one complete tag (header, payload, PreviousTagSize).
    pub fn from_bytes(bytes: Bytes) -> Result<Self, FlvError> {
        match parse_tag_head(&bytes, MAX_DATA_SIZE)? {
            Some(head) if head.total == bytes.len() => Ok(Self {
                kind: head.kind,
                timestamp: head.timestamp,
                bytes,
            }),
            Some(head) => Err(FlvError::TrailingBytes(bytes.len() - head.total)),
            _ => Err(FlvError::Truncated {
                buffered: bytes.len(),
            }),
        }
    }

    pub fn kind(&self) -> TagKind {
        self.kind
    }

    /// Decode timestamp in milliseconds (24-bit field plus the extension byte as bits 24..32).
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The whole on-wire tag, header and PreviousTagSize included. Cloning it is a refcount bump.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// On-wire length (11 + data size + 4).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true for a valid tag (it always has a header); here for API completeness.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The payload (what the data size counts).
    pub fn data(&self) -> &[u8] {
        &self.bytes[TAG_HEADER_LEN..self.bytes.len() - PREV_TAG_SIZE_LEN]
    }

    /// Video codec id (low nibble of the first payload byte) for legacy video tags; `None` for
    /// other kinds, empty payloads and enhanced-RTMP tags (which carry a FourCC instead).
    pub fn video_codec(&self) -> Option<u8> {
        match (self.kind, self.data().first()) {
            (TagKind::Video, Some(&b)) if b & VIDEO_EX_HEADER == 0 => Some(b & 0x0F),
            _ => None,
        }
    }

    /// Sound format (high nibble of the first payload byte) for audio tags.
    pub fn sound_format(&self) -> Option<u8> {
        match (self.kind, self.data().first()) {
            (TagKind::Audio, Some(&b)) => Some(b >> 4),
            _ => None,
        }
    }

    /// A video tag whose frame type is 1 (key frame). Viewers must start on one of these.
    pub fn is_keyframe(&self) -> bool {
        match (self.kind, self.data().first()) {
            (TagKind::Video, Some(&b)) => (b >> 4) & 0x07 == 1,
            _ => false,
        }
    }

    /// A decoder configuration record: AVC/HEVC packet type 0, enhanced-RTMP SequenceStart, or
    /// AAC packet type 0. Decoders need it before any frame, so it is cached per stream.
    pub fn is_sequence_header(&self) -> bool {
        let d = self.data();
        match self.kind {
            TagKind::Video => match d.first() {
                Some(&b) if b & VIDEO_EX_HEADER != 0 => b & 0x0F == 0,
                Some(&b) => {
                    matches!(b & 0x0F, VIDEO_CODEC_AVC | VIDEO_CODEC_HEVC) && d.get(1) == Some(&0)
                }
                None => false,
            },
            TagKind::Audio => {
                d.first().map(|b| b >> 4) == Some(SOUND_FORMAT_AAC) && d.get(1) == Some(&0)
            }
            TagKind::Script => false,
        }
    }

    /// A script tag whose first AMF0 value is the string "onMetaData".
    pub fn is_metadata(&self) -> bool {
        const NAME: &[u8] = b"onMetaData";
        if self.kind != TagKind::Script {
            return false;
        }
        let d = self.data();
        // AMF0 string marker (2), u16 length, bytes.
        d.len() >= 3 + NAME.len()
            && d[0] == 0x02
            && u16::from_be_bytes([d[1], d[2]]) as usize == NAME.len()
            && &d[3..3 + NAME.len()] == NAME
    }

    /// A copy of this tag with another timestamp. This copies the bytes (the original is shared
    /// and must not change), so callers do it once per tag, not once per viewer.
    pub fn with_timestamp(&self, timestamp: u32) -> Tag {
        let mut b = BytesMut::from(&self.bytes[..]);
        b[4] = (timestamp >> 16) as u8;
        b[5] = (timestamp >> 8) as u8;
        b[6] = timestamp as u8;
        b[7] = (timestamp >> 24) as u8;
        Tag {
            kind: self.kind,
            timestamp,
            bytes: b.freeze(),
        }
    }
}

fn put_u24(b: &mut BytesMut, v: u32) {
    b.put_u8((v >> 16) as u8);
    b.put_u8((v >> 8) as u8);
    b.put_u8(v as u8);
}

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

/// A tag header decoded from the front of a buffer.
struct TagHead {
    kind: TagKind,
    timestamp: u32,
    /// On-wire length of the whole tag.
    total: usize,
}

/// Decodes and checks the tag at the front of `buf`. `Ok(None)`: more bytes are needed. Checks
/// happen as soon as the bytes they need are present, so garbage fails early instead of making
/// us wait for (and buffer) a bogus data size.
fn parse_tag_head(buf: &[u8], max_data_size: u32) -> Result<Option<TagHead>, FlvError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = TagKind::from_byte(first)?;
    if buf.len() < TAG_HEADER_LEN {
        return Ok(None);
    }
    let data_size = u24(&buf[1..4]);
    if data_size > max_data_size {
        return Err(FlvError::DataTooLarge {
            size: data_size,
            max: max_data_size,
        });
    }
    let timestamp = u24(&buf[4..7]) | (u32::from(buf[7]) << 24);
    let total = TAG_HEADER_LEN + data_size as usize + PREV_TAG_SIZE_LEN;
    if buf.len() < total {
        return Ok(None);
    }
    let pts_at = total - PREV_TAG_SIZE_LEN;
    let found = (&buf[pts_at..total]).get_u32();
    let expected = TAG_HEADER_LEN as u32 + data_size;
    if found != expected {
        return Err(FlvError::PrevTagSizeMismatch { expected, found });
    }
    Ok(Some(TagHead {
        kind,
        timestamp,
        total,
    }))
}

/// What the parser found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The file header (always first, exactly once).
    Header(Header),
    /// One complete tag.
    Tag(Tag),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Header,
    Tags,
    Failed(FlvError),
}

/// Incremental FLV parser: push bytes in chunks of any size, pull [`Event`]s.
///
/// Bounded: a complete tag is always handed out before more is needed, so a caller that drains
/// events after each push never has more than one partial tag (≤ 11 + max data size + 4 bytes)
/// plus its last chunk buffered. [`Parser::push`] refuses input once that bound is reached
/// without draining, instead of growing.
#[derive(Debug)]
pub struct Parser {
    buf: BytesMut,
    state: State,
    max_data_size: u32,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser accepting any tag the format can express.
    pub fn new() -> Self {
        Self::with_max_data_size(MAX_DATA_SIZE)
    }

    /// A parser that rejects tags whose data size exceeds `max` (clamped to the 24-bit maximum).
    pub fn with_max_data_size(max: u32) -> Self {
        Self {
            buf: BytesMut::new(),
            state: State::Header,
            max_data_size: max.min(MAX_DATA_SIZE),
        }
    }

    /// The most bytes the parser may need to hold to complete one item.
    pub fn buffer_limit(&self) -> usize {
        TAG_HEADER_LEN + self.max_data_size as usize + PREV_TAG_SIZE_LEN
    }

    /// Bytes received but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends input. Fails if the parser has failed or if the caller kept pushing without
    /// draining events past [`Parser::buffer_limit`].
    pub fn push(&mut self, data: &[u8]) -> Result<(), FlvError> {
        self.check_push()?;
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Like [`Parser::push`], but adopts `data` without copying when nothing is buffered (a
    /// whole file read into memory, for instance): tags are then slices of `data` itself.
    pub fn push_bytes(&mut self, data: Bytes) -> Result<(), FlvError> {
        self.check_push()?;
        if self.buf.is_empty() {
            // Zero-copy when `data` is uniquely owned; otherwise one copy, like `push`.
            self.buf = BytesMut::from(data);
        } else {
            self.buf.extend_from_slice(&data);
        }
        Ok(())
    }

    fn check_push(&self) -> Result<(), FlvError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let limit = self.buffer_limit();
        if self.buf.len() >= limit {
            return Err(FlvError::BufferFull {
                buffered: self.buf.len(),
                limit,
            });
        }
        Ok(())
    }

    /// The next complete item, `Ok(None)` if more input is needed. After an error every call
    /// returns the same error.
    pub fn next_event(&mut self) -> Result<Option<Event>, FlvError> {
        let r = self.step();
        if let Err(e) = &r {
            self.state = State::Failed(e.clone());
        }
        r
    }

    fn step(&mut self) -> Result<Option<Event>, FlvError> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::Header => {
                let n = self.buf.len().min(3);
                if self.buf[..n] != b"FLV"[..n] {
                    let mut sig = [0u8; 3];
                    sig[..n].copy_from_slice(&self.buf[..n]);
                    return Err(FlvError::BadSignature(sig));
                }
                if self.buf.len() < FILE_HEADER_LEN {
                    return Ok(None);
                }
                let size = (&self.buf[5..9]).get_u32();
                if !(FILE_HEADER_LEN as u32..=MAX_HEADER_SIZE).contains(&size) {
                    return Err(FlvError::BadHeaderSize(size));
                }
                let total = size as usize + PREV_TAG_SIZE_LEN;
                if self.buf.len() < total {
                    return Ok(None);
                }
                let pts0 = (&self.buf[size as usize..total]).get_u32();
                if pts0 != 0 {
                    return Err(FlvError::PrevTagSizeMismatch {
                        expected: 0,
                        found: pts0,
                    });
                }
                let flags = self.buf[4];
                let bytes = self.buf.split_to(total).freeze();
                self.state = State::Tags;
                Ok(Some(Event::Header(Header {
                    has_audio: flags & 0x04 != 0,
                    has_video: flags & 0x01 != 0,
                    bytes,
                })))
            }
            State::Tags => match parse_tag_head(&self.buf, self.max_data_size)? {
                None => Ok(None),
                Some(head) => {
                    let bytes = self.buf.split_to(head.total).freeze();
                    Ok(Some(Event::Tag(Tag {
                        kind: head.kind,
                        timestamp: head.timestamp,
                        bytes,
                    })))
                }
            },
        }
    }

    /// Call at end of input: fails if a partial header or tag is left over (or the parser
    /// failed earlier).
    pub fn finish(&self) -> Result<(), FlvError> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ if !self.buf.is_empty() => Err(FlvError::Truncated {
                buffered: self.buf.len(),
            }),
            State::Header => Err(FlvError::Truncated { buffered: 0 }),
            State::Tags => Ok(()),
        }
    }
}

/// A whole FLV held in memory, split into header and tags (zero-copy: every tag is a slice of
/// the input).
#[derive(Debug, Clone)]
pub struct Demuxed {
    pub header: Option<Header>,
    /// Every tag before the first error.
    pub tags: Vec<Tag>,
    /// Why parsing stopped early, if it did (the tags above are the valid prefix).
    pub error: Option<FlvError>,
}

/// Parses a complete in-memory FLV, keeping the valid prefix if it is corrupt or truncated.
pub fn demux(data: Bytes) -> Demuxed {
    let mut p = Parser::new();
    let mut out = Demuxed {
        header: None,
        tags: Vec::new(),
        error: None,
    };
    if let Err(e) = p.push_bytes(data) {
        out.error = Some(e);
        return out;
    }
    loop {
        match p.next_event() {
            Ok(Some(Event::Header(h))) => out.header = Some(h),
            Ok(Some(Event::Tag(t))) => out.tags.push(t),
            Ok(None) => {
                out.error = p.finish().err();
                return out;
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn avc_seq() -> Tag {
        Tag::new(TagKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 2, 3]).unwrap()
    }
    fn aac_seq() -> Tag {
        Tag::new(TagKind::Audio, 0, &[0xAF, 0, 0x12, 0x10]).unwrap()
    }
    fn metadata() -> Tag {
        let mut d = vec![0x02, 0x00, 10];
        d.extend_from_slice(b"onMetaData");
        d.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 9]);
        Tag::new(TagKind::Script, 0, &d).unwrap()
    }

    fn sample_stream() -> (Vec<u8>, Vec<Tag>) {
        let tags = vec![
            metadata(),
            avc_seq(),
            aac_seq(),
            Tag::new(TagKind::Video, 0, &[0x17, 1, 0, 0, 0, 9, 9, 9]).unwrap(),
            Tag::new(TagKind::Audio, 23, &[0xAF, 1, 5, 5]).unwrap(),
            Tag::new(TagKind::Video, 40, &[0x27, 1, 0, 0, 0, 8]).unwrap(),
            Tag::new(TagKind::Video, 0x0123_4567, &[]).unwrap(),
        ];
        (serialize(&FLV_HEADER, &tags), tags)
    }

    fn serialize(header: &[u8], tags: &[Tag]) -> Vec<u8> {
        let mut out = header.to_vec();
        for t in tags {
            out.extend_from_slice(t.bytes());
        }
        out
    }

    /// Feeds `chunks` in order, draining after each; returns the tags, or the first error.
    fn parse_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Tag>, FlvError> {
        let mut p = Parser::new();
        let mut tags = Vec::new();
        let mut header_seen = false;
        for c in chunks {
            p.push(c)?;
            while let Some(ev) = p.next_event()? {
                match ev {
                    Event::Header(h) => {
                        assert!(!header_seen);
                        header_seen = true;
                        assert_eq!(&h.bytes[..], &FLV_HEADER[..]);
                    }
                    Event::Tag(t) => tags.push(t),
                }
            }
        }
        p.finish()?;
        Ok(tags)
    }

    #[test]
    fn parses_header_and_tags() {
        let (bytes, tags) = sample_stream();
        let got = parse_chunks([&bytes[..]]).unwrap();
        assert_eq!(got, tags);
        assert!(got[0].is_metadata());
        assert!(got[1].is_sequence_header() && got[1].is_keyframe());
        assert!(got[2].is_sequence_header());
        assert!(got[3].is_keyframe() && !got[3].is_sequence_header());
        assert!(!got[4].is_sequence_header() && !got[4].is_keyframe());
        assert!(!got[5].is_keyframe());
        assert_eq!(got[6].timestamp(), 0x0123_4567);
        assert!(got[6].data().is_empty());
        assert!(!got[6].is_keyframe() && !got[6].is_sequence_header());
        assert_eq!(got[1].video_codec(), Some(7));
        assert_eq!(got[2].sound_format(), Some(10));
    }

    #[test]
    fn header_flags() {
        assert_eq!(file_header(true, false)[4], 0x04);
        assert_eq!(file_header(false, true)[4], 0x01);
        let mut p = Parser::new();
        p.push(&file_header(false, true)).unwrap();
        match p.next_event().unwrap() {
            Some(Event::Header(h)) => assert!(h.has_video && !h.has_audio),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn with_timestamp_rewrites_only_the_timestamp() {
        let t = Tag::new(TagKind::Video, 5, &[0x27, 1, 0, 0, 0, 1]).unwrap();
        let u = t.with_timestamp(0xAB12_3456);
        assert_eq!(u.timestamp(), 0xAB12_3456);
        assert_eq!(u.data(), t.data());
        assert_eq!(&u.bytes()[4..8], &[0x12, 0x34, 0x56, 0xAB]);
        assert_eq!(Tag::from_bytes(u.bytes().clone()).unwrap(), u);
        assert_eq!(t.timestamp(), 5);
    }

    #[test]
    fn tags_share_the_input_buffer() {
        let (bytes, _) = sample_stream();
        let input = Bytes::from(bytes);
        let range = input.as_ptr_range();
        // `input` is uniquely owned, so the parser adopts it instead of copying.
        let d = demux(input);
        assert!(d.error.is_none());
        for t in &d.tags {
            assert!(range.contains(&t.bytes().as_ptr()), "tag was copied");
        }
    }

    #[test]
    fn typed_errors() {
        let mut p = Parser::new();
        p.push(b"FLX").unwrap();
        assert_eq!(p.next_event(), Err(FlvError::BadSignature(*b"FLX")));
        // Failure is sticky.
        assert!(p.push(b"x").is_err());

        let mut h = FLV_HEADER;
        h[8] = 200;
        h[7] = 200;
        assert!(matches!(
            parse_chunks([&h[..]]),
            Err(FlvError::BadHeaderSize(_))
        ));

        let mut h = FLV_HEADER;
        h[12] = 1;
        assert!(matches!(
            parse_chunks([&h[..]]),
            Err(FlvError::PrevTagSizeMismatch { .. })
        ));

        let (mut bytes, _) = sample_stream();
        let first_tag = FLV_HEADER.len();
        let mut b2 = bytes.clone();
        b2[first_tag] = 0x28; // filter bit
        assert_eq!(parse_chunks([&b2[..]]), Err(FlvError::Filtered));
        b2[first_tag] = 7;
        assert_eq!(parse_chunks([&b2[..]]), Err(FlvError::UnknownTagType(7)));

        let len = bytes.len();
        bytes[len - 1] ^= 1;
        assert!(matches!(
            parse_chunks([&bytes[..]]),
            Err(FlvError::PrevTagSizeMismatch { .. })
        ));
        bytes.truncate(len - 3);
        assert!(matches!(
            parse_chunks([&bytes[..]]),
            Err(FlvError::Truncated { .. })
        ));
    }

    #[test]
    fn data_size_bound_is_checked_before_buffering() {
        let mut p = Parser::with_max_data_size(100);
        p.push(&FLV_HEADER).unwrap();
        assert!(matches!(p.next_event(), Ok(Some(Event::Header(_)))));
        p.push(&[9, 0, 0, 101, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            p.next_event(),
            Err(FlvError::DataTooLarge {
                size: 101,
                max: 100
            })
        );
    }

    #[test]
    fn push_without_draining_is_bounded() {
        let mut p = Parser::with_max_data_size(10);
        let limit = p.buffer_limit();
        p.push(&vec![0u8; limit]).unwrap();
        assert!(matches!(p.push(b"x"), Err(FlvError::BufferFull { .. })));
    }

    #[test]
    fn demux_keeps_valid_prefix() {
        let (mut bytes, tags) = sample_stream();
        bytes.extend_from_slice(&[9, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        let d = demux(Bytes::from(bytes));
        assert_eq!(d.tags, tags);
        assert!(matches!(d.error, Some(FlvError::Truncated { .. })));
    }

    #[test]
    fn every_two_way_split_yields_the_same_tags() {
        let (bytes, tags) = sample_stream();
        for i in 0..=bytes.len() {
            let got = parse_chunks([&bytes[..i], &bytes[i..]]).unwrap();
            assert_eq!(got, tags, "split at {i}");
        }
        let got = parse_chunks(bytes.chunks(1)).unwrap();
        assert_eq!(got, tags);
    }

    #[test]
    fn enhanced_rtmp_video() {
        // IsExHeader | frame type 1 | packet type 0 (SequenceStart), FourCC "hvc1".
        let t = Tag::new(TagKind::Video, 0, &[0x90, b'h', b'v', b'c', b'1', 1]).unwrap();
        assert!(t.is_keyframe() && t.is_sequence_header());
        assert_eq!(t.video_codec(), None);
        // Coded frames, inter frame.
        let t = Tag::new(TagKind::Video, 0, &[0xA1, b'h', b'v', b'c', b'1']).unwrap();
        assert!(!t.is_keyframe() && !t.is_sequence_header());
    }

    fn arb_tag() -> impl Strategy<Value = Tag> {
        (
            prop_oneof![
                Just(TagKind::Audio),
                Just(TagKind::Video),
                Just(TagKind::Script)
            ],
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(k, ts, data)| Tag::new(k, ts, &data).unwrap())
    }

    proptest! {
        #[test]
        fn random_chunking_yields_identical_tags(
            tags in proptest::collection::vec(arb_tag(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let bytes = serialize(&FLV_HEADER, &tags);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            let got = parse_chunks(chunks).unwrap();
            prop_assert_eq!(got, tags);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..64) {
            let mut p = Parser::with_max_data_size(1 << 12);
            for c in data.chunks(chunk) {
                if p.push(c).is_err() { break; }
                while let Ok(Some(_)) = p.next_event() {}
                prop_assert!(p.buffered() <= p.buffer_limit() + chunk);
            }
            let _ = p.finish();
        }

        #[test]
        fn corrupted_valid_stream_never_panics(
            tags in proptest::collection::vec(arb_tag(), 1..8),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = serialize(&FLV_HEADER, &tags);
            for (i, v) in flips {
                let at = i.index(bytes.len());
                bytes[at] = v;
            }
            let d = demux(Bytes::from(bytes));
            for t in &d.tags {
                let _ = (t.is_keyframe(), t.is_sequence_header(), t.is_metadata(), t.data().len());
            }
        }
    }
}
