//! `vimgeo encode`, `vimgeo bench encoder|scan`, and the engine options every model-loading command shares.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use vimgeo::encoder::scan::{self, Kernel, ScanDims, Threading};
use vimgeo::encoder::{
    open_encoder, Encoder, EncoderConfig, EngineChoice, ExecutionProviderKind, OrtConfig,
    OrtLibrarySearch, RgbImage, ScanForm, ScanKernelTime, TractConfig,
};

#[derive(Debug, Args)]
pub(crate) struct EncodeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Images to embed (PNG or JPEG, any size: they are resized to the model's input).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchEncoderArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Timed frames.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed frames first (allocations, caches, TensorRT engine build).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Frame to encode; default a synthetic image of the model's input size.
    #[arg(long)]
    image: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchScanArgs {
    /// Sequence length L (Vim-S at 384 px: 577 tokens).
    #[arg(long, default_value_t = 577)]
    len: usize,
    /// Channels D (Vim-S: 768).
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// State size N.
    #[arg(long, default_value_t = 16)]
    state: usize,
    /// Batch B.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Threads for the kernels (1: on the calling thread); default all cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Timed scans per kernel.
    #[arg(long, default_value_t = 20)]
    iters: usize,
}

/// The engine options shared by `encode` and `bench encoder`, as given; resolved by [`EngineArgs::resolve`].
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// The model: `<name>.onnx` (its manifest `<name>.json` must sit next to it) or the manifest itself.
    #[arg(long)]
    model: PathBuf,
    /// Inference engine: ONNX Runtime, tract, or ONNX Runtime when its library loads, else tract.
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    /// ONNX Runtime library (libonnxruntime.so); default $ORT_DYLIB_PATH, then the Python environment.
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// ONNX Runtime execution providers to try, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ProviderArg::Tensorrt, ProviderArg::Cuda, ProviderArg::Cpu])]
    providers: Vec<ProviderArg>,
    /// Folder where TensorRT keeps its built engines between runs.
    #[arg(long, value_name = "DIR")]
    trt_cache: Option<PathBuf>,
    /// Let TensorRT use FP16.
    #[arg(long)]
    trt_fp16: bool,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long)]
    intra_threads: Option<usize>,
    /// tract: frames per graph run (the input shape is fixed to it at load).
    #[arg(long, default_value_t = 1)]
    tract_batch: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EngineArg {
    Ort,
    Tract,
    Auto,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ProviderArg {
    Tensorrt,
    Cuda,
    Cpu,
}

impl EngineArgs {
    /// Resolves the raw options and the environment (`ORT_DYLIB_PATH`, `VIRTUAL_ENV`, `HOME`) into the
    /// library's configuration, once.
    pub(crate) fn resolve(&self) -> anyhow::Result<EncoderConfig> {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        if self.tract_batch == 0 {
            bail!("--tract-batch must be at least 1");
        }
        Ok(EncoderConfig {
            engine: match self.engine {
                EngineArg::Ort => EngineChoice::Ort,
                EngineArg::Tract => EngineChoice::Tract,
                EngineArg::Auto => EngineChoice::Auto,
            },
            ort_library: OrtLibrarySearch::from_vars(
                self.ort_lib.as_deref().map(absolute),
                |name| std::env::var_os(name),
            ),
            ort: OrtConfig {
                providers: self
                    .providers
                    .iter()
                    .map(|p| match p {
                        ProviderArg::Tensorrt => ExecutionProviderKind::TensorRt,
                        ProviderArg::Cuda => ExecutionProviderKind::Cuda,
                        ProviderArg::Cpu => ExecutionProviderKind::Cpu,
                    })
                    .collect(),
                tensorrt_cache_dir: self.trt_cache.clone(),
                tensorrt_fp16: self.trt_fp16,
                intra_threads: self.intra_threads,
                ..OrtConfig::default()
            },
            tract: TractConfig {
                batch: self.tract_batch,
            },
        })
    }

    pub(crate) fn open(&self) -> anyhow::Result<Box<dyn Encoder>> {
        let config = self.resolve()?;
        let encoder = open_encoder(&self.model, &config).with_context(|| {
            format!(
                "cannot open model {} with engine {}",
                self.model.display(),
                config.engine
            )
        })?;
        log::info!(
            "encoder: {} on {} ({})",
            encoder.manifest().name,
            encoder.engine_name(),
            encoder.device()
        );
        Ok(encoder)
    }
}

pub(crate) fn read_image(path: &Path) -> anyhow::Result<RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8())
}

/// One line of `vimgeo encode`'s output.
#[derive(serde::Serialize)]
pub(crate) struct EncodedImage<'a> {
    image: String,
    engine: &'a str,
    embedding: &'a [f32],
}

pub(crate) fn encode(args: &EncodeArgs) -> anyhow::Result<()> {
    let mut encoder = args.engine.open()?;
    for path in &args.images {
        let image = read_image(path)?;
        let embedding = encoder
            .encode(&image)
            .with_context(|| format!("cannot encode {}", path.display()))?;
        let line = EncodedImage {
            image: path.display().to_string(),
            engine: encoder.engine_name(),
            embedding: &embedding,
        };
        let line = serde_json::to_string(&line).context("cannot serialise the embedding")?;
        println!("{line}");
    }
    Ok(())
}

pub(crate) fn bench_encoder(args: &BenchEncoderArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut encoder = args.engine.open()?;
    let load = start.elapsed();
    let (h, w) = (
        encoder.manifest().input.height,
        encoder.manifest().input.width,
    );
    let image = match &args.image {
        Some(path) => read_image(path)?,
        // A smooth, textured frame: exercises the same path as a camera image of the model's size.
        None => RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w.max(1)) as u8,
                (y * 255 / h.max(1)) as u8,
                ((x ^ y) & 0xff) as u8,
            ])
        }),
    };
    for _ in 0..args.warmup {
        encoder.encode(&image)?;
    }
    let iters = args.iters.max(1);
    let mut frames = Vec::with_capacity(iters);
    let before = ScanKernelTime::now();
    for _ in 0..iters {
        let t = Instant::now();
        encoder.encode(&image)?;
        frames.push(t.elapsed());
    }
    let scan = ScanKernelTime::now().since(before);
    let total: Duration = frames.iter().sum();
    frames.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: f64| frames[((frames.len() - 1) as f64 * p).round() as usize];
    let m = encoder.manifest();
    println!(
        "model {} ({} scan, {}x{} -> {}) on {} ({}), loaded in {:.0} ms",
        args.engine.model.display(),
        m.scan_form,
        m.input.width,
        m.input.height,
        m.output.dim,
        encoder.engine_name(),
        encoder.device(),
        ms(load)
    );
    println!(
        "per frame ({iters} frames, {}x{} input): p50 {:.2} ms, p90 {:.2} ms, mean {:.2} ms, min {:.2} ms",
        image.width(),
        image.height(),
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(total) / iters as f64,
        ms(frames[0])
    );
    if scan.calls > 0 {
        println!(
            "SelectiveScan kernel: {} calls/frame, {:.2} ms/frame, {:.1}% of frame time",
            scan.calls / iters as u64,
            ms(scan.total) / iters as f64,
            100.0 * scan.total.as_secs_f64() / total.as_secs_f64()
        );
    } else if m.scan_form == ScanForm::Portable {
        println!(
            "SelectiveScan kernel: not used (portable scan form: the graph runs the scan itself)"
        );
    } else {
        println!("SelectiveScan kernel: not used (no selective scan in this model)");
    }
    match peak_rss_kib() {
        Some(kib) => println!("peak memory (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak memory (VmHWM): unavailable (no /proc/self/status)"),
    }
    Ok(())
}

/// The process's peak resident set size, from Linux's `/proc/self/status`.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn bench_scan(args: &BenchScanArgs) -> anyhow::Result<()> {
    let dims = ScanDims {
        batch: args.batch,
        dim: args.dim,
        len: args.len,
        state: args.state,
    };
    let iters = args.iters.max(1);
    let run = || -> anyhow::Result<()> {
        let threading = if args.threads == Some(1) {
            Threading::Single
        } else {
            Threading::Rayon
        };
        let reference = scan::bench_reference(dims, iters.min(5))?;
        println!("{reference}");
        for kernel in Kernel::available() {
            let report = scan::bench(dims, kernel, threading, iters)?;
            println!(
                "{report}  ({:.1}x the reference)",
                reference.ms_p50 / report.ms_p50
            );
        }
        Ok(())
    };
    match args.threads {
        Some(n) if n > 1 => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .context("cannot start the benchmark's thread pool")?
            .install(run),
        Some(0) => bail!("--threads must be at least 1"),
        _ => run(),
    }
}
