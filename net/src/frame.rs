//! Frames on byte streams: `crate::frame`'s layout written and read through tokio's
//! `AsyncWrite`/`AsyncRead`. A reader's memory follows the bytes that arrive, not the
//! lengths a prefix claims. Everything `crate::frame` names is here too.

use bytes::{BufMut, Bytes, BytesMut};
pub use proto::frame::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes a frame: the message, then the bulk payload as it is (no copy into one buffer:
/// payloads are up to 64 MiB).
pub async fn write<W: AsyncWrite + Unpin>(
    writer: &mut W,
    header: &impl Serialize,
    bulk: &[u8],
) -> Result<(), FrameError> {
    writer.write_all(&encode_head(header, bulk.len())?).await?;
    if !bulk.is_empty() {
        writer.write_all(bulk).await?;
    }
    Ok(())
}

/// Reads a frame's prefix; `None` at a clean end of stream.
pub async fn read_prefix<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: Limits,
) -> Result<Option<Prefix>, FrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    while filled < PREFIX_BYTES {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated("inside a frame prefix"))
            };
        }
        filled += n;
    }
    Prefix::parse(&prefix, limits).map(Some)
}

/// Reads the body of a frame whose prefix was read.
pub async fn read_body<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    prefix: Prefix,
) -> Result<(T, Bytes), FrameError> {
    // Memory follows the bytes that actually arrive, not the lengths the prefix claims, so
    // a peer that announces a large frame and sends nothing holds 64 KiB, not the frame.
    let header = read_up_to(reader, prefix.header_len, "inside a message").await?;
    let bulk = read_up_to(reader, prefix.bulk_len, "inside a bulk payload").await?;
    Ok((decode_message(&header)?, bulk.freeze()))
}

/// Reads exactly `len` bytes, growing the buffer as they come.
async fn read_up_to<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
    place: &'static str,
) -> Result<BytesMut, FrameError> {
    const STEP: usize = 64 << 10;
    let mut buffer = BytesMut::with_capacity(len.min(STEP));
    while buffer.len() < len {
        if buffer.capacity() == buffer.len() {
            // Once the first step has arrived the sender is sending: room for the rest at
            // once (one copy of the first step, instead of one per doubling).
            buffer.reserve(len - buffer.len());
        }
        let wanted = len - buffer.len();
        let n = reader.read_buf(&mut (&mut buffer).limit(wanted)).await?;
        if n == 0 {
            return Err(FrameError::Truncated(place));
        }
    }
    Ok(buffer)
}

/// Reads one whole frame; `None` at a clean end of stream.
pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: &mut R,
    limits: Limits,
) -> Result<Option<(T, Bytes)>, FrameError> {
    match read_prefix(reader, limits).await? {
        Some(prefix) => read_body(reader, prefix).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proto::message::OsdRequest as Request;

    /// Reads every frame of `bytes` from a stream, as an endpoint does.
    fn read_all(bytes: &[u8], limits: Limits) -> Result<Vec<(Request, Bytes)>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let mut reader = bytes;
            let mut frames = Vec::new();
            while let Some(frame) = read(&mut reader, limits).await.map_err(|e| e.to_string())? {
                frames.push(frame);
            }
            Ok(frames)
        })
    }

    /// The same, from memory with `crate::frame::decode`.
    fn decode_all(mut bytes: &[u8], limits: Limits) -> Result<Vec<(Request, Bytes)>, String> {
        let mut frames = Vec::new();
        while let Some((frame, rest)) = decode(bytes, limits).map_err(|e| e.to_string())? {
            frames.push(frame);
            bytes = rest;
        }
        Ok(frames)
    }

    proptest! {
        /// The stream reader agrees with the decoder in memory on every input, frames
        /// written by the writer with bytes flipped included: same frames, same errors.
        #[test]
        fn a_stream_reads_what_the_decoder_decodes(
            sent in prop::collection::vec((any::<i64>(), prop::collection::vec(any::<u8>(), 0..40)), 0..4),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let mut bytes = Vec::new();
            for (sent_ms, bulk) in &sent {
                runtime.block_on(write(&mut bytes, &Request::Ping { sent_ms: *sent_ms }, bulk)).unwrap();
            }
            if flips.is_empty() {
                let frames = read_all(&bytes, Limits::default()).unwrap();
                prop_assert_eq!(frames.len(), sent.len());
                for ((request, bulk), (sent_ms, sent_bulk)) in frames.iter().zip(&sent) {
                    let ping = matches!(request, Request::Ping { sent_ms: s } if s == sent_ms);
                    prop_assert!(ping, "{:?} is not the ping sent at {}", request, sent_ms);
                    prop_assert_eq!(&bulk[..], &sent_bulk[..]);
                }
            }
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= byte;
                }
            }
            let limits = Limits { header_bytes_max: 4096, bulk_bytes_max: 4096 };
            let (streamed, decoded) = (read_all(&bytes, limits), decode_all(&bytes, limits));
            prop_assert_eq!(format!("{streamed:?}"), format!("{decoded:?}"));
        }
    }

    #[tokio::test]
    async fn a_frame_cut_short_on_a_stream_is_truncated() {
        let mut bytes = Vec::new();
        write(&mut bytes, &Request::Ping { sent_ms: 1 }, b"bulk").await.unwrap();
        for len in 1..bytes.len() {
            let mut reader = &bytes[..len];
            let result = read::<_, Request>(&mut reader, Limits::default()).await;
            assert!(matches!(result, Err(FrameError::Truncated(_))), "{len}: {result:?}");
        }
    }
}
