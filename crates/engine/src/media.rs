//! Uploaded images.
//!
//! An upload is identified by its bytes, never by what the client says it
//! is: PNG, JPEG, GIF and WebP are accepted, anything else (an SVG, an HTML
//! page named `.png`) is refused. Metadata is stripped before anything is
//! stored (phones write GPS positions into EXIF): JPEG, PNG and WebP lose
//! every metadata segment or chunk without being re-encoded, a GIF is
//! re-encoded frame by frame from its palette (losslessly) without its
//! comments and application blocks. The stripped bytes are stored under
//! their content hash (`media/HASH.EXT`), made durable, and only then
//! recorded, with their owner, in one transaction that checks the quota.
//!
//! Resized variants (lossless WebP, [`VARIANT_WIDTHS`]) are made by the
//! worker, never on the request path; until one exists, the router answers
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

/// The image without its metadata.
pub fn strip(bytes: Bytes, format: MediaFormat) -> Result<Bytes, MediaError> {
    let unreadable = |e: &dyn std::fmt::Display| MediaError::Image(format!("not a readable image: {e}"));
    Ok(match format {
        MediaFormat::Jpeg => {
            let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(bytes).map_err(|e| unreadable(&e))?;
            jpeg.segments_mut().retain(|s| {
                let marker = s.marker();
                let app = (0xE0..=0xEF).contains(&marker);
                // Keep JFIF (APP0), the colour profile (APP2 ICC_PROFILE) and
                // Adobe's colour transform (APP14); EXIF, XMP, IPTC, comments go.
                let keep_app =
                    marker == 0xE0 || marker == 0xEE || (marker == 0xE2 && s.contents().starts_with(b"ICC_PROFILE\0"));
                (!app || keep_app) && marker != 0xFE
            });
            jpeg.encoder().bytes()
        }
        MediaFormat::Png => {
            let mut png = img_parts::png::Png::from_bytes(bytes).map_err(|e| unreadable(&e))?;
            png.chunks_mut().retain(|c| !matches!(&c.kind(), b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME"));
            png.encoder().bytes()
        }
        MediaFormat::Webp => {
            use img_parts::ImageEXIF;
            let mut webp = img_parts::webp::WebP::from_bytes(bytes).map_err(|e| unreadable(&e))?;
            webp.set_exif(None);
            webp.remove_chunks_by_id(*b"XMP ");
            webp.encoder().bytes()
        }
        MediaFormat::Gif => strip_gif(&bytes).map_err(|e| unreadable(&e))?.into(),
    })
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
    let (stored, width, height) = tokio::task::spawn_blocking(move || {
        let (width, height) = dimensions(&bytes, format, max_pixels)?;
        let stored = strip(bytes, format)?;
        Ok::<_, MediaError>((stored, width, height))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("media task failed: {e}")))??;
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
        let height = ((u64::from(row.height) * u64::from(width)).div_ceil(u64::from(row.width)) as u32).max(1);
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
/// many media it finished. Idempotent: two workers making the same variants
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
        let made = tokio::task::spawn_blocking(move || variants(&original, &for_task, max_pixels))
            .await
            .map_err(|e| EngineError::Internal(format!("media task failed: {e}")))?;
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
