//! Uploaded images.
//!
//! An upload is identified by its bytes, never by what the client says it
//! is: PNG, JPEG, GIF and WebP are accepted, anything else (an SVG, an HTML
//! page named `.png`) is refused, and so is a file that does not decode
//! whole (cut short, or pixels of random bytes behind a right header);
//! decoding is bounded in memory across concurrent uploads ([`DECODING`]).
//! Metadata is stripped before anything is stored (phones write GPS
//! positions into EXIF): JPEG, PNG and WebP lose
//! every metadata segment or chunk without being re-encoded, a GIF is
//! re-encoded frame by frame from its palette (losslessly) without its
//! comments and application blocks. The stripped bytes are stored under
//! their content hash (`media/HASH.EXT`), made durable, and only then
//! recorded, with their owner, in one transaction that checks the quota.
//!
//! Resized variants (lossless WebP, [`VARIANT_WIDTHS`]) are made by the
//! publisher, never on the request path; until one exists, the router answers
//! its URL with a temporary redirect to the original.

use std::io::Cursor;

use bytes::Bytes;
use sesame_model::media::media_key;
use sesame_model::{AccountId, MediaFormat};
use sesame_store::{MediaAdded, MediaRow};

use crate::{EngineError, Project};

/// Why an upload is refused.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Not an image of an accepted format (by its bytes).
    #[error("only PNG, JPEG, GIF and WebP images are accepted")]
    Type,
    /// Larger than `[media] max_bytes`.
    #[error("the file is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// More pixels than `[media] max_pixels`, or unreadable dimensions.
    #[error("{0}")]
    Image(String),
    /// The account's media would exceed `[media] quota_mb`.
    #[error("the account's media would exceed its quota of {quota} bytes ({used} bytes used)")]
    Quota {
        /// Bytes the account's other media take.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<sesame_store::StoreError> for MediaError {
    fn from(e: sesame_store::StoreError) -> MediaError {
        MediaError::Engine(e.into())
    }
}

impl From<sesame_objects::ObjectError> for MediaError {
    fn from(e: sesame_objects::ObjectError) -> MediaError {
        MediaError::Engine(e.into())
    }
}

/// The format of an image by its first bytes.
pub fn sniff(bytes: &[u8]) -> Option<MediaFormat> {
    match image::guess_format(bytes).ok()? {
        image::ImageFormat::Png => Some(MediaFormat::Png),
        image::ImageFormat::Jpeg => Some(MediaFormat::Jpeg),
        image::ImageFormat::Gif => Some(MediaFormat::Gif),
        image::ImageFormat::WebP => Some(MediaFormat::Webp),
        _ => None,
    }
}

fn image_format(format: MediaFormat) -> image::ImageFormat {
    match format {
        MediaFormat::Png => image::ImageFormat::Png,
        MediaFormat::Jpeg => image::ImageFormat::Jpeg,
        MediaFormat::Gif => image::ImageFormat::Gif,
        MediaFormat::Webp => image::ImageFormat::WebP,
    }
}

/// Limits for reading an image of at most `max_pixels`.
fn limits(max_pixels: u64) -> image::Limits {
    let mut limits = image::Limits::default();
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX).min(65_535);
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    limits
}

/// Width and height, refusing images beyond `max_pixels`.
fn dimensions(bytes: &[u8], format: MediaFormat, max_pixels: u64) -> Result<(u32, u32), MediaError> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format(format));
    reader.limits(limits(max_pixels));
    let (width, height) =
        reader.into_dimensions().map_err(|e| MediaError::Image(format!("not a readable image: {e}")))?;
    if u64::from(width) * u64::from(height) > max_pixels || width == 0 || height == 0 {
        return Err(MediaError::Image(format!("{width}×{height} pixels is more than the {max_pixels} accepted")));
    }
    Ok((width, height))
}

/// Checks that `bytes` decode whole into an image (a file whose header is
/// right and whose pixels are not, cut short or random, is refused), within
/// the pixel limit. The caller holds [`decoding`]'s permits for it.
fn decodes(bytes: &[u8], format: MediaFormat, max_pixels: u64) -> Result<(), MediaError> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format(format));
    reader.limits(limits(max_pixels));
    reader.decode().map_err(|e| MediaError::Image(format!("not a readable image: {e}")))?;
    Ok(())
}

/// Pixels decoded at once across every upload and every variant being made
/// (an operator's import decodes on every core instead): a decoded image
/// takes up to 8 bytes a pixel, so this bounds that memory (as a permit per
/// hashing bounds passwords' memory) at 512 MiB. An image larger than this
/// alone waits for the whole budget.
const DECODING_PIXELS: u64 = 64 << 20;

/// Pixels per permit of [`DECODING`] (permits are counted in `u32`).
const PIXELS_PER_PERMIT: u64 = 4096;

static DECODING: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new((DECODING_PIXELS / PIXELS_PER_PERMIT) as usize);

/// Waits until an image of `width`×`height` may be decoded.
async fn decoding(width: u32, height: u32) -> tokio::sync::SemaphorePermit<'static> {
    let pixels = u64::from(width) * u64::from(height);
    let permits = pixels.div_ceil(PIXELS_PER_PERMIT).clamp(1, DECODING_PIXELS / PIXELS_PER_PERMIT) as u32;
    let waited = std::time::Instant::now();
    let permit = DECODING.acquire_many(permits).await.expect("the decoding semaphore is never closed");
    metrics::histogram!("sesame_media_decode_wait_seconds").record(waited.elapsed().as_secs_f64());
    permit
}

/// The image without its metadata, with only the parts a decoder needs:
/// JPEG segments and PNG and WebP chunks of known kinds (a made-up chunk can
/// carry a script as well as a comment can), nothing after the image's end
/// (an HTML page appended to a JPEG). A JPEG without its end marker or a PNG
/// without its end chunk is refused as truncated.
pub fn strip(bytes: Bytes, format: MediaFormat) -> Result<Bytes, MediaError> {
    let unreadable = |e: &dyn std::fmt::Display| MediaError::Image(format!("not a readable image: {e}"));
    let truncated = || MediaError::Image("not a readable image: it is cut short".into());
    Ok(match format {
        MediaFormat::Jpeg => {
            let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(bytes).map_err(|e| unreadable(&e))?;
            jpeg.segments_mut().retain(|s| jpeg_keeps(s.marker(), s.contents()));
            // img_parts stops at the first scan: the rest of the file is that
            // scan's "entropy", later scans, the end marker and whatever
            // follows, written out after the segments.
            let head = 2 + jpeg.segments().iter().map(|s| s.len()).sum::<usize>();
            let whole = jpeg.encoder().bytes();
            let tail = jpeg_tail(whole.get(head..).unwrap_or_default()).ok_or_else(truncated)?;
            let mut out = Vec::with_capacity(head + tail.len());
            out.extend_from_slice(&whole[..head]);
            out.extend_from_slice(&tail);
            out.into()
        }
        MediaFormat::Png => {
            let mut png = img_parts::png::Png::from_bytes(bytes).map_err(|e| unreadable(&e))?;
            if png.chunks().last().is_none_or(|c| &c.kind() != b"IEND") {
                return Err(truncated());
            }
            png.chunks_mut().retain(|c| PNG_CHUNKS.contains(&c.kind()));
            png.encoder().bytes()
        }
        MediaFormat::Webp => {
            use img_parts::ImageEXIF;
            let mut webp = img_parts::webp::WebP::from_bytes(bytes).map_err(|e| unreadable(&e))?;
            webp.set_exif(None);
            webp.remove_chunks_by_id(*b"XMP ");
            webp.chunks_mut().retain(|c| WEBP_CHUNKS.contains(&c.id()));
            webp.encoder().bytes()
        }
        MediaFormat::Gif => strip_gif(&bytes).map_err(|e| unreadable(&e))?.into(),
    })
}

/// PNG chunks a decoder uses (the PNG 3 specification's, and APNG's); text,
/// time, EXIF and unknown chunks go.
const PNG_CHUNKS: &[[u8; 4]] = &[
    *b"IHDR", *b"PLTE", *b"IDAT", *b"IEND", *b"tRNS", *b"cHRM", *b"gAMA", *b"iCCP", *b"sBIT", *b"sRGB", *b"cICP",
    *b"mDCV", *b"cLLI", *b"bKGD", *b"hIST", *b"pHYs", *b"sPLT", *b"acTL", *b"fcTL", *b"fdAT",
];

/// WebP chunks a decoder uses; EXIF, XMP and unknown chunks go.
const WEBP_CHUNKS: &[[u8; 4]] = &[*b"VP8 ", *b"VP8L", *b"VP8X", *b"ALPH", *b"ANIM", *b"ANMF", *b"ICCP"];

/// Whether a JPEG keeps a marker segment: frame and scan headers, tables,
/// restart intervals, and of the application segments only JFIF (APP0), the
/// colour profile (APP2 `ICC_PROFILE`) and Adobe's colour transform (APP14).
/// EXIF, XMP, IPTC, comments and unknown segments go.
fn jpeg_keeps(marker: u8, contents: &[u8]) -> bool {
    match marker {
        // SOF0–SOF15 with DHT (C4) and DAC (CC); C8 is reserved.
        0xC0..=0xCF => marker != 0xC8,
        // SOS, DQT, DNL, DRI.
        0xDA..=0xDD => true,
        0xE0 | 0xEE => true,
        0xE2 => contents.starts_with(b"ICC_PROFILE\0"),
        _ => false,
    }
}

/// The part of a JPEG after its first scan header, up to and including its
/// end marker, with the segments between later scans filtered as
/// [`jpeg_keeps`] says; `None` when the end marker never comes (truncated).
///
/// img_parts leaves this part whole. Within entropy-coded data a 0xFF byte
/// is followed by 0x00 (a stuffed byte), a restart marker or another 0xFF
/// (fill); anything else is a marker, which makes the scan end findable
/// without decoding (ITU T.81, B.1.1.5 and F.1.2.3).
fn jpeg_tail(tail: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(tail.len());
    let (mut copied, mut i) = (0, 0);
    while i + 1 < tail.len() {
        if tail[i] != 0xFF {
            i += 1;
            continue;
        }
        match tail[i + 1] {
            0xFF => i += 1,
            // Stuffed byte, restart markers, and the markers without a length.
            0x00 | 0x01 | 0xD0..=0xD8 => i += 2,
            0xD9 => {
                out.extend_from_slice(&tail[copied..i + 2]);
                return Some(out);
            }
            marker => {
                let length = usize::from(u16::from_be_bytes([*tail.get(i + 2)?, *tail.get(i + 3)?]));
                let end = (i + 2 + length).min(tail.len());
                out.extend_from_slice(&tail[copied..i]);
                if jpeg_keeps(marker, tail.get(i + 4..end)?) {
                    out.extend_from_slice(&tail[i..end]);
                }
                (copied, i) = (end, end);
            }
        }
    }
    None
}

/// A GIF written again from its frames: the pixels, palettes, timing and
/// loop count stay; comments and application blocks (XMP) do not.
fn strip_gif(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let palette = decoder.global_palette().unwrap_or(&[]).to_vec();
    let (width, height, repeat) = (decoder.width(), decoder.height(), decoder.repeat());
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, width, height, &palette).map_err(|e| e.to_string())?;
        encoder.set_repeat(repeat).map_err(|e| e.to_string())?;
        while let Some(frame) = decoder.read_next_frame().map_err(|e| e.to_string())? {
            let mut frame = frame.clone();
            frame.interlaced = false; // the decoder hands rows over in order
            encoder.write_frame(&frame).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// Accepts an upload for `account`: checks, strips, stores and records it.
/// The same image uploaded again is the same medium.
pub async fn upload(project: &Project, account: Option<AccountId>, bytes: Bytes) -> Result<MediaRow, MediaError> {
    let config = &project.site.config.media;
    if bytes.len() > config.max_bytes {
        return Err(MediaError::TooLarge { limit: config.max_bytes });
    }
    let format = sniff(&bytes).ok_or(MediaError::Type)?;
    let max_pixels = config.max_pixels;
    // The header first (cheap), then the whole image within the budget.
    let (width, height) = dimensions(&bytes, format, max_pixels)?;
    let permit = decoding(width, height).await;
    let stored = tokio::task::spawn_blocking(move || {
        let stored = strip(bytes, format)?;
        decodes(&stored, format, max_pixels)?;
        Ok::<_, MediaError>(stored)
    })
    .await
    .map_err(|e| EngineError::Internal(format!("media task failed: {e}")))??;
    drop(permit);
    let hash = sesame_objects::hash_hex(&stored);
    let row = MediaRow {
        hash: hash.clone(),
        format,
        width,
        height,
        size: stored.len() as u64,
        created: sesame_model::time::now(),
        variants: None,
    };
    // Durable before it is recorded, like every object before its pointer.
    project.objects.put(&media_key(&hash, format, None), stored).await?;
    project.objects.sync().await?;
    let quota = config.quota_mb.saturating_mul(1 << 20);
    match project.store.add_media(&row, account, account.map(|_| quota)).await? {
        MediaAdded::Stored { row, .. } => {
            metrics::counter!("sesame_media_uploads_total").increment(1);
            metrics::counter!("sesame_media_bytes_total").increment(row.size);
            Ok(row)
        }
        MediaAdded::OverQuota { used } => Err(MediaError::Quota { used, quota }),
    }
}

/// Stores many images for the operator (no owner, no quota): checked and
/// stripped like uploads, written together, made durable once, recorded in
/// one transaction. For imported content and the demo.
pub async fn store_many(project: &Project, images: Vec<Bytes>) -> Result<Vec<MediaRow>, MediaError> {
    let max_pixels = project.site.config.media.max_pixels;
    let now = sesame_model::time::now();
    let prepared = tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        images
            .into_par_iter()
            .map(|bytes| {
                let format = sniff(&bytes).ok_or(MediaError::Type)?;
                let (width, height) = dimensions(&bytes, format, max_pixels)?;
                let stored = strip(bytes, format)?;
                decodes(&stored, format, max_pixels)?;
                let hash = sesame_objects::hash_hex(&stored);
                let row =
                    MediaRow { hash, format, width, height, size: stored.len() as u64, created: now, variants: None };
                Ok::<_, MediaError>((row, stored))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| EngineError::Internal(format!("media task failed: {e}")))??;
    let puts = prepared.iter().map(|(row, bytes)| (media_key(&row.hash, row.format, None), bytes.clone())).collect();
    project.objects.put_many(puts).await?;
    project.objects.sync().await?;
    let rows: Vec<MediaRow> = prepared.into_iter().map(|(row, _)| row).collect();
    project.store.add_media_many(&rows).await?;
    Ok(rows)
}

/// The resized variants of an image: lossless WebP at each width narrower
/// than it. GIFs keep their animation by having none.
pub fn variants(bytes: &[u8], row: &MediaRow, max_pixels: u64) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let widths: Vec<u32> = row.info().variant_widths().collect();
    if widths.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format(row.format));
    reader.limits(limits(max_pixels));
    let image = reader.decode().map_err(|e| e.to_string())?.to_rgba8();
    let mut out = Vec::new();
    for width in widths {
        let height = row.info().variant_height(width);
        let resized = image::imageops::resize(&image, width, height, image::imageops::FilterType::CatmullRom);
        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .encode(resized.as_raw(), width, height, image::ExtendedColorType::Rgba8)
            .map_err(|e| e.to_string())?;
        out.push((width, webp));
    }
    Ok(out)
}

/// Makes the variants of up to `limit` media that lack them; returns how
/// many media it finished. Idempotent: two publishers making the same variants
/// write the same bytes.
pub async fn make_pending_variants(project: &Project, limit: u32) -> Result<usize, EngineError> {
    let pending = project.store.pending_media(limit).await?;
    let max_pixels = project.site.config.media.max_pixels;
    for row in &pending {
        let key = media_key(&row.hash, row.format, None);
        let Some(original) = project.objects.get(&key).await? else {
            tracing::warn!(medium = %key, "an uploaded image is missing from storage; no variants");
            project.store.media_variants_made(&row.hash, &[]).await?;
            continue;
        };
        let for_task = row.clone();
        let permit = decoding(row.width, row.height).await;
        let made = tokio::task::spawn_blocking(move || variants(&original, &for_task, max_pixels))
            .await
            .map_err(|e| EngineError::Internal(format!("media task failed: {e}")))?;
        drop(permit);
        let made = match made {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!(medium = %key, error = %e, "cannot make variants of an image");
                Vec::new()
            }
        };
        let widths: Vec<u32> = made.iter().map(|(w, _)| *w).collect();
        let puts = made.into_iter().map(|(w, bytes)| (media_key(&row.hash, row.format, Some(w)), Bytes::from(bytes)));
        project.objects.put_many(puts.collect()).await?;
        project.objects.sync().await?;
        project.store.media_variants_made(&row.hash, &widths).await?;
        metrics::counter!("sesame_media_variants_total").increment(widths.len() as u64);
    }
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: image::ImageFormat, width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([x as u8, y as u8, 7, 255]));
        let mut out = Vec::new();
        let image = image::DynamicImage::ImageRgba8(image);
        let image = if format == image::ImageFormat::Jpeg { image.to_rgb8().into() } else { image };
        image.write_to(&mut Cursor::new(&mut out), format).expect("encode");
        out
    }

    /// What an upload stores, or why it is refused.
    fn stored(bytes: Vec<u8>) -> Result<Bytes, MediaError> {
        let format = sniff(&bytes).ok_or(MediaError::Type)?;
        dimensions(&bytes, format, 1 << 24)?;
        let stored = strip(bytes.into(), format)?;
        decodes(&stored, format, 1 << 24)?;
        Ok(stored)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    const SCRIPT: &[u8] = b"<html><script>alert(document.cookie)</script></html>";

    #[test]
    fn html_appended_after_a_jpeg_is_cut() {
        let jpeg = encoded(image::ImageFormat::Jpeg, 40, 30);
        let kept = stored([jpeg.clone(), SCRIPT.to_vec()].concat()).expect("stored");
        assert!(!contains(&kept, b"<script"));
        assert!(kept.ends_with(&[0xFF, 0xD9]));
        assert_eq!(kept, stored(jpeg).expect("stored"), "the same image, whatever followed it");
    }

    #[test]
    fn a_script_in_a_jpeg_comment_or_unknown_segment_is_dropped() {
        let jpeg = encoded(image::ImageFormat::Jpeg, 40, 30);
        let mut parsed = img_parts::jpeg::Jpeg::from_bytes(jpeg.into()).expect("jpeg");
        for marker in [0xFE, 0xE5, 0xF0] {
            let segment = img_parts::jpeg::JpegSegment::new_with_contents(marker, Bytes::from_static(SCRIPT));
            parsed.segments_mut().insert(1, segment);
        }
        let kept = stored(parsed.encoder().bytes().to_vec()).expect("stored");
        assert!(!contains(&kept, b"<script"));
    }

    #[test]
    fn made_up_png_chunks_and_bytes_after_the_end_are_dropped() {
        let png = encoded(image::ImageFormat::Png, 40, 30);
        let mut parsed = img_parts::png::Png::from_bytes(png.into()).expect("png");
        let at = parsed.chunks().len() - 1;
        parsed.chunks_mut().insert(at, img_parts::png::PngChunk::new(*b"scRp", Bytes::from_static(SCRIPT)));
        parsed.chunks_mut().insert(1, img_parts::png::PngChunk::new(*b"tEXt", Bytes::from_static(SCRIPT)));
        let crafted = [parsed.encoder().bytes().to_vec(), SCRIPT.to_vec()].concat();
        assert!(contains(&crafted, b"scRp"));
        let kept = stored(crafted).expect("stored");
        assert!(!contains(&kept, b"<script"));
        assert!(!contains(&kept, b"scRp"));
    }

    #[test]
    fn unknown_webp_chunks_are_dropped() {
        let webp = encoded(image::ImageFormat::WebP, 40, 30);
        let mut parsed = img_parts::webp::WebP::from_bytes(webp.into()).expect("webp");
        parsed.chunks_mut().push(img_parts::riff::RiffChunk::new(
            *b"scRp",
            img_parts::riff::RiffContent::Data(Bytes::from_static(SCRIPT)),
        ));
        let crafted = parsed.encoder().bytes().to_vec();
        assert!(contains(&crafted, b"<script"));
        let kept = stored(crafted).expect("stored");
        assert!(!contains(&kept, b"<script"));
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        let jpeg = encoded(image::ImageFormat::Jpeg, 200, 150);
        let cut = jpeg[..jpeg.len() * 2 / 3].to_vec();
        assert!(matches!(stored(cut), Err(MediaError::Image(_))));
    }

    #[test]
    fn a_truncated_png_is_refused() {
        let png = encoded(image::ImageFormat::Png, 200, 150);
        let cut = png[..png.len() - 12].to_vec(); // without IEND
        assert!(matches!(stored(cut), Err(MediaError::Image(_))));
    }

    #[test]
    fn a_png_whose_pixels_are_random_bytes_is_refused() {
        let png = encoded(image::ImageFormat::Png, 200, 150);
        let mut parsed = img_parts::png::Png::from_bytes(png.into()).expect("png");
        let mut noise = vec![0u8; 4096];
        fastrand::Rng::with_seed(7).fill(&mut noise);
        for chunk in parsed.chunks_mut().iter_mut().filter(|c| &c.kind() == b"IDAT") {
            *chunk = img_parts::png::PngChunk::new(*b"IDAT", noise.clone().into());
        }
        // A right header and valid checksums: only decoding tells.
        let crafted = parsed.encoder().bytes().to_vec();
        let format = sniff(&crafted).expect("a PNG by its bytes");
        assert!(dimensions(&crafted, format, 1 << 24).is_ok());
        assert!(matches!(stored(crafted), Err(MediaError::Image(_))));
    }

    #[test]
    fn a_jpeg_tail_ends_at_its_end_marker() {
        let scan = [0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56];
        let comment = [0xFF, 0xFE, 0x00, 0x04, b'h', b'i'];
        let tables = [0xFF, 0xC4, 0x00, 0x03, 0x01];
        let tail = [&scan[..], &comment, &tables, &scan, &[0xFF, 0xD9], b"<html>"].concat();
        assert_eq!(jpeg_tail(&tail), Some([&scan[..], &tables, &scan, &[0xFF, 0xD9]].concat()));
        assert_eq!(jpeg_tail(&scan), None, "no end marker");
        assert_eq!(jpeg_tail(&[0x12, 0xFF, 0xC4, 0x00]), None, "a segment cut short");
    }
}
