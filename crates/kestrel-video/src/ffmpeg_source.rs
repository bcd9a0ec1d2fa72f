//! Video files and V4L2 cameras decoded by the system's FFmpeg (through `ffmpeg-next`).

use crate::{check_frame_size, Frame, FrameSource, Result, SourceInfo, VideoError};
use ff::format::Pixel;
use ff::software::scaling::{context::Context as Scaler, flag::Flags};
use ffmpeg_next as ff;
use std::path::Path;
use std::sync::Once;

/// Consecutive packets the decoder may reject before the stream is declared broken. Isolated
/// damaged packets are skipped and counted; a run this long means the data is not a video.
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 64;

static INIT: Once = Once::new();

/// An swscale context that may move to another thread.
struct SendScaler(Scaler);

// SAFETY: an SwsContext has no thread affinity; FFmpeg only forbids using one context from two
// threads at once. `SendScaler` is owned by exactly one `FfmpegSource`, which needs `&mut self`
// to use it, so it is never used concurrently.
unsafe impl Send for SendScaler {}

fn init() {
    INIT.call_once(|| {
        // Errors are reported through Kestrel's own messages; FFmpeg's console log is silenced.
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Quiet);
    });
}

/// A decoded video stream: the best video stream of a file or a camera device.
pub struct FfmpegSource {
    input: ff::format::context::Input,
    stream_index: usize,
    time_base: f64,
    start: i64,
    decoder: ff::decoder::Video,
    scaler: Option<(SendScaler, Pixel, u32, u32)>,
    decoded: ff::frame::Video,
    eof_sent: bool,
    finished: bool,
    delivered: u64,
    skipped: u64,
    bad_run: u32,
    info: SourceInfo,
}

fn open_err(name: &str, e: impl std::fmt::Display) -> VideoError {
    VideoError::Open {
        name: name.into(),
        msg: e.to_string(),
    }
}

impl FfmpegSource {
    /// Opens a video file (any container and codec this FFmpeg build decodes).
    pub fn open_file(path: &Path) -> Result<FfmpegSource> {
        init();
        let name = path.display().to_string();
        if !path.is_file() {
            return Err(open_err(&name, "no such file"));
        }
        let input = ff::format::input(path).map_err(|e| open_err(&name, e))?;
        Self::from_input(name, input, "video", false)
    }

    /// Opens a V4L2 camera such as `/dev/video0`.
    pub fn open_camera(device: &str) -> Result<FfmpegSource> {
        init();
        ff::device::register_all();
        // SAFETY: av_find_input_format takes a NUL-terminated name and returns a pointer to a
        // static format description, or null when this FFmpeg has no such demuxer.
        let fmt = unsafe { ff::ffi::av_find_input_format(c"video4linux2".as_ptr()) };
        if fmt.is_null() {
            return Err(open_err(
                device,
                "this FFmpeg build has no video4linux2 input",
            ));
        }
        // SAFETY: `fmt` is a non-null pointer to a static AVInputFormat (checked above).
        let format = ff::Format::Input(unsafe { ff::format::format::Input::wrap(fmt as *mut _) });
        let ctx = ff::format::open_with(device, &format, ff::Dictionary::new())
            .map_err(|e| open_err(device, e))?;
        match ctx {
            ff::format::context::Context::Input(input) => {
                Self::from_input(device.into(), input, "camera", true)
            }
            ff::format::context::Context::Output(_) => Err(open_err(device, "opened as an output")),
        }
    }

    fn from_input(
        name: String,
        input: ff::format::context::Input,
        kind: &'static str,
        live: bool,
    ) -> Result<FfmpegSource> {
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| open_err(&name, "no video stream"))?;
        let stream_index = stream.index();
        let tb = stream.time_base();
        let time_base = if tb.denominator() != 0 {
            tb.numerator() as f64 / tb.denominator() as f64
        } else {
            0.0
        };
        let start = if stream.start_time() == ff::ffi::AV_NOPTS_VALUE {
            0
        } else {
            stream.start_time()
        };
        let rate = stream.avg_frame_rate();
        let fps = (rate.denominator() != 0 && rate.numerator() > 0)
            .then(|| rate.numerator() as f64 / rate.denominator() as f64);
        let frames = (stream.frames() > 0).then_some(stream.frames() as u64);
        let ctx = ff::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| open_err(&name, e))?;
        let codec = ctx.id();
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| open_err(&name, format!("no decoder for {codec:?}: {e}")))?;
        check_frame_size(&name, decoder.width(), decoder.height())?;
        let info = SourceInfo {
            kind,
            name,
            width: decoder.width(),
            height: decoder.height(),
            fps,
            frames,
            codec: Some(format!("{codec:?}").to_ascii_lowercase()),
            live,
        };
        Ok(FfmpegSource {
            input,
            stream_index,
            time_base,
            start,
            decoder,
            scaler: None,
            decoded: ff::frame::Video::empty(),
            eof_sent: false,
            finished: false,
            delivered: 0,
            skipped: 0,
            bad_run: 0,
            info,
        })
    }

    fn decode_err(&self, msg: impl std::fmt::Display) -> VideoError {
        VideoError::Decode {
            name: self.info.name.clone(),
            frame: self.delivered,
            msg: msg.to_string(),
        }
    }

    /// Converts the frame in `self.decoded` to RGB24.
    fn convert(&mut self) -> Result<Frame> {
        let (fmt, w, h) = (
            self.decoded.format(),
            self.decoded.width(),
            self.decoded.height(),
        );
        check_frame_size(&self.info.name, w, h)?;
        let stale =
            !matches!(&self.scaler, Some((_, f, sw, sh)) if *f == fmt && *sw == w && *sh == h);
        if stale {
            let s = Scaler::get(fmt, w, h, Pixel::RGB24, w, h, Flags::BILINEAR)
                .map_err(|e| self.decode_err(format!("no conversion from {fmt:?}: {e}")))?;
            self.scaler = Some((SendScaler(s), fmt, w, h));
        }
        let mut rgb = ff::frame::Video::empty();
        let scaler = &mut self.scaler.as_mut().expect("set above").0 .0;
        scaler
            .run(&self.decoded, &mut rgb)
            .map_err(|e| VideoError::Decode {
                name: self.info.name.clone(),
                frame: self.delivered,
                msg: format!("pixel conversion: {e}"),
            })?;
        let stride = rgb.stride(0);
        let row = w as usize * 3;
        let data = rgb.data(0);
        let mut pixels = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            pixels.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let pts = self
            .decoded
            .timestamp()
            .map(|t| (t - self.start) as f64 * self.time_base);
        let index = self.delivered;
        self.delivered += 1;
        Ok(Frame {
            index,
            pts,
            image: image::RgbImage::from_raw(w, h, pixels)
                .expect("row copies give exactly w*h*3 bytes"),
        })
    }
}

impl FrameSource for FfmpegSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {
                    self.bad_run = 0;
                    return self.convert().map(Some);
                }
                Err(ff::Error::Eof) => {
                    self.finished = true;
                    return Ok(None);
                }
                Err(ff::Error::Other { errno }) if errno == ff::ffi::EAGAIN => {}
                Err(_) => {
                    // A frame the decoder could not reconstruct: skip it.
                    self.skipped += 1;
                    continue;
                }
            }
            if self.eof_sent {
                // Drained: EAGAIN after EOF cannot happen in a conforming decoder; stop.
                self.finished = true;
                return Ok(None);
            }
            let mut packet = ff::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {
                    if packet.stream() != self.stream_index {
                        continue;
                    }
                    match self.decoder.send_packet(&packet) {
                        Ok(()) => self.bad_run = 0,
                        Err(ff::Error::Other { errno }) if errno == ff::ffi::EAGAIN => {}
                        Err(e) => {
                            self.skipped += 1;
                            self.bad_run += 1;
                            if self.bad_run > MAX_CONSECUTIVE_BAD_PACKETS {
                                return Err(self.decode_err(format!(
                                    "{} consecutive undecodable packets (last: {e})",
                                    self.bad_run
                                )));
                            }
                        }
                    }
                }
                Err(ff::Error::Eof) => {
                    self.eof_sent = true;
                    // Flush the decoder's delayed frames.
                    let _ = self.decoder.send_eof();
                }
                Err(e) => {
                    // The container itself is damaged past this point (e.g. truncated file):
                    // deliver what the decoder holds, then end; the damage is counted.
                    self.skipped += 1;
                    self.bad_run += 1;
                    if self.info.live || self.bad_run > MAX_CONSECUTIVE_BAD_PACKETS {
                        return Err(self.decode_err(e));
                    }
                    self.eof_sent = true;
                    let _ = self.decoder.send_eof();
                }
            }
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}
