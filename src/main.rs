//! The `vimgeo` command line: the only place that parses arguments and reads the environment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use vimgeo::encoder::scan::{self, Kernel, ScanDims, Threading};
use vimgeo::encoder::{
    open_encoder, Encoder, EncoderConfig, EngineChoice, ExecutionProviderKind, OrtConfig,
    OrtLibrarySearch, RgbImage, ScanForm, ScanKernelTime, TractConfig,
};

/// Onboard visual geo-localization for GNSS-denied drones.
#[derive(Debug, Parser)]
#[command(name = "vimgeo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the build: crate version, target and enabled CPU features.
    Version,
    /// Embed images with an exported model; prints one JSON line per image.
    Encode(EncodeArgs),
    /// Measure the encoder, the selective-scan kernel or the tile-cache search.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Build, inspect, verify, query and preview satellite tile caches.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// The flight-controller link over MAVLink.
    #[command(subcommand)]
    Fc(FcCommand),
}

#[derive(Debug, Subcommand)]
enum FcCommand {
    /// Print the vehicle state and the GNSS verdict live from a MAVLink stream (sends only our HEARTBEAT and
    /// stream requests, never a fix).
    Monitor(FcMonitorArgs),
}

#[derive(Debug, Args)]
struct FcMonitorArgs {
    /// The link: udpin:HOST:PORT, udpout:HOST:PORT, tcp:HOST:PORT or serial:DEVICE:BAUD.
    #[arg(long, default_value = "udpin:0.0.0.0:14550")]
    link: String,
    /// Our system id (default: the autopilot's, learned from its HEARTBEAT).
    #[arg(long)]
    system_id: Option<u8>,
    /// Our component id.
    #[arg(long, default_value_t = vimgeo::fc::DEFAULT_COMPONENT_ID)]
    component_id: u8,
    /// Seconds between printed lines.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<f64>,
    /// MAVLink 2 signing key file: one line, 64 hex digits or passphrase:TEXT (the key MAVProxy's
    /// `signing setup TEXT` derives). Our frames are then signed; incoming signed frames are verified.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EncodeArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Images to embed (PNG or JPEG, any size: they are resized to the model's input).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Per-frame latency, peak memory, and the selective-scan kernel's share of the time.
    Encoder(BenchEncoderArgs),
    /// Milliseconds per selective scan for each kernel this CPU has, against the reference loop.
    Scan(BenchScanArgs),
    /// Milliseconds per top-k query over a synthetic tile cache.
    Search(BenchSearchArgs),
}

#[derive(Debug, Args)]
struct BenchEncoderArgs {
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
struct BenchScanArgs {
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
struct EngineArgs {
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
enum EngineArg {
    Ort,
    Tract,
    Auto,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProviderArg {
    Tensorrt,
    Cuda,
    Cpu,
}

impl EngineArgs {
    /// Resolves the raw options and the environment (`ORT_DYLIB_PATH`, `VIRTUAL_ENV`, `HOME`) into the
    /// library's configuration, once.
    fn resolve(&self) -> anyhow::Result<EncoderConfig> {
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

    fn open(&self) -> anyhow::Result<Box<dyn Encoder>> {
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

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "vimgeo {} ({} {})",
                vimgeo::VERSION,
                std::env::consts::ARCH,
                std::env::consts::OS
            );
        }
        Command::Encode(args) => encode(&args)?,
        Command::Bench(BenchCommand::Encoder(args)) => bench_encoder(&args)?,
        Command::Bench(BenchCommand::Scan(args)) => bench_scan(&args)?,
        Command::Bench(BenchCommand::Search(args)) => bench_search(&args)?,
        Command::Cache(command) => cache(command)?,
        Command::Fc(FcCommand::Monitor(args)) => fc_monitor(&args)?,
    }
    Ok(())
}

fn fc_monitor(args: &FcMonitorArgs) -> anyhow::Result<()> {
    use vimgeo::fc::{FcLink, LinkAddress, LinkConfig, PublishPolicy};
    if !(args.interval.is_finite() && args.interval > 0.0) {
        bail!("--interval must be a positive number of seconds");
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d >= 0.0)) {
        bail!("--duration must be a non-negative number of seconds");
    }
    let mut config = LinkConfig::new(LinkAddress::parse(&args.link)?);
    config.system_id = args.system_id;
    config.component_id = args.component_id;
    config.signing_key = args.signing_key.clone();
    config.policy = PublishPolicy::Never;
    let link = FcLink::spawn(config)?;
    let started = Instant::now();
    let end = args
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    loop {
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        println!("{}", format_snapshot(&link.snapshot(), Instant::now()));
        if end.is_some_and(|e| Instant::now() >= e) {
            return Ok(());
        }
    }
}

/// One line of `fc monitor`: autopilot, position, GNSS, height, verdict.
fn format_snapshot(s: &vimgeo::fc::LinkSnapshot, now: Instant) -> String {
    let v = &s.vehicle;
    let mut line = String::new();
    match v.autopilot {
        Some(a) => line.push_str(&format!(
            "autopilot {:?} sys {} {}{}",
            a.value.kind,
            a.value.system_id,
            if a.value.armed { "armed" } else { "disarmed" },
            if s.autopilot_alive { "" } else { " (LOST)" }
        )),
        None => line.push_str("autopilot: none yet"),
    }
    if let Some(p) = v.global_position {
        line.push_str(&format!(
            " | pos {:.7} {:.7} alt {:.1} m rel {:.1} m",
            p.value.lat_deg, p.value.lon_deg, p.value.alt_msl_m, p.value.relative_alt_m
        ));
    }
    if let Some(a) = v.attitude {
        line.push_str(&format!(
            " | rpy {:.1} {:.1} {:.1} deg",
            a.value.roll.to_degrees(),
            a.value.pitch.to_degrees(),
            a.value.yaw.to_degrees()
        ));
    }
    if let Some(g) = v.gps1 {
        line.push_str(&format!(
            " | gps fix {} sats {} age {:.1} s",
            g.value.fix_type,
            g.value.satellites.map_or("?".to_owned(), |n| n.to_string()),
            g.age(now).as_secs_f32()
        ));
    }
    if let Some(h) = v.height_above_ground {
        line.push_str(&format!(" | agl {:.1} m", h.value.distance_m));
    }
    line.push_str(&format!(
        " | GNSS {} ({}) | in {} out {} bad {}{}",
        s.gnss.verdict,
        s.gnss.reason,
        s.stats.frames_in,
        s.stats.frames_out,
        s.stats.parse_errors,
        if s.open { "" } else { " | link DOWN" }
    ));
    if s.stats.bad_signatures > 0 || s.stats.unsigned_in > 0 {
        line.push_str(&format!(
            " | bad signature {} unsigned {}",
            s.stats.bad_signatures, s.stats.unsigned_in
        ));
    }
    line
}

fn read_image(path: &Path) -> anyhow::Result<RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8())
}

/// One line of `vimgeo encode`'s output.
#[derive(serde::Serialize)]
struct EncodedImage<'a> {
    image: String,
    engine: &'a str,
    embedding: &'a [f32],
}

fn encode(args: &EncodeArgs) -> anyhow::Result<()> {
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

fn bench_encoder(args: &BenchEncoderArgs) -> anyhow::Result<()> {
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
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench_scan(args: &BenchScanArgs) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------------------------------
// `vimgeo cache ...` and `vimgeo bench search`

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Cut an orthophoto into tiles at the camera's footprint, embed them and write a cache (resumable).
    Build(CacheBuildArgs),
    /// Print a cache's metadata and extent.
    Info(CacheInfoArgs),
    /// Check a cache's checksum, and that it belongs to a model when --model is given.
    Verify(CacheVerifyArgs),
    /// Embed images and print their best-matching tiles: one JSON line per image.
    Query(CacheQueryArgs),
    /// Draw a cache's tiles over its orthophoto (a PNG to check before a flight).
    Preview(CachePreviewArgs),
}

/// How to read the orthophoto, shared by `cache build` and `cache preview`.
// Read only by the GDAL-backed commands.
#[cfg_attr(not(feature = "gdal"), allow(dead_code))]
#[derive(Debug, Args)]
struct OrthoArgs {
    /// The orthophoto: a GeoTIFF, or an image with a world file (then --crs is required).
    #[arg(long, value_name = "IMG")]
    ortho: PathBuf,
    /// The imagery's CRS (`EPSG:32612`, WKT or PROJ): for world-file images; overrides a GeoTIFF's own.
    #[arg(long)]
    crs: Option<String>,
    /// 1-based bands to use as red, green, blue (e.g. `3,2,1` for a blue,green,red file); default by
    /// colour interpretation, else 1,2,3.
    #[arg(long, value_delimiter = ',', value_name = "R,G,B")]
    bands: Option<Vec<usize>>,
    /// Percentiles of the contrast stretch of data wider than 8 bits (per band).
    #[arg(long, value_delimiter = ',', value_name = "LOW,HIGH", default_values_t = [2.0, 98.0])]
    percentiles: Vec<f64>,
    /// Nodata value of every band, for fill the file does not declare (e.g. `0` around a Landsat scene).
    #[arg(long, allow_negative_numbers = true)]
    nodata: Option<f64>,
}

// Read only by the GDAL-backed commands.
#[cfg_attr(not(feature = "gdal"), allow(dead_code))]
#[derive(Debug, Args)]
struct CacheBuildArgs {
    #[command(flatten)]
    ortho: OrthoArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// The cache file to write (its build journal is `<OUT>.partial`).
    #[arg(long, value_name = "CACHE")]
    out: PathBuf,
    /// Tile side(s) on the ground in metres, one per scale (instead of --height/--hfov-deg).
    #[arg(long, value_delimiter = ',', value_name = "METRES")]
    footprint: Option<Vec<f64>>,
    /// Flight height band above ground, metres (`80..150`): tiles at the footprints seen from --scales
    /// heights spread over it.
    #[arg(long, value_name = "LOW..HIGH")]
    height: Option<String>,
    /// The camera's horizontal field of view, degrees (with --height).
    #[arg(long)]
    hfov_deg: Option<f64>,
    /// Scales over the height band (1: its middle).
    #[arg(long, default_value_t = 3)]
    scales: usize,
    /// Step between neighbouring tiles as a fraction of the footprint.
    #[arg(long, default_value_t = 0.5)]
    stride: f64,
    /// How the cache stores embeddings.
    #[arg(long, value_enum, default_value_t = DtypeArg::F16)]
    dtype: DtypeArg,
    /// Tiles per encoder call (and per journal record).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Skip tiles with more than this fraction of nodata pixels.
    #[arg(long, default_value_t = 0.5)]
    max_nodata: f32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DtypeArg {
    F16,
    F32,
}

#[derive(Debug, Args)]
struct CacheInfoArgs {
    /// The cache file.
    cache: PathBuf,
}

#[derive(Debug, Args)]
struct CacheVerifyArgs {
    /// The cache file.
    cache: PathBuf,
    /// The model the cache must belong to (`.onnx` or its manifest).
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CacheQueryArgs {
    /// The cache file.
    cache: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// Images to localise (PNG or JPEG, north-up nadir views).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Matches per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Only tiles whose centre is within RADIUS_M metres of LAT,LON.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LAT,LON,RADIUS_M",
        allow_negative_numbers = true
    )]
    prior: Option<Vec<f64>>,
}

// Read only by the GDAL-backed commands.
#[cfg_attr(not(feature = "gdal"), allow(dead_code))]
#[derive(Debug, Args)]
struct CachePreviewArgs {
    /// The cache file.
    cache: PathBuf,
    #[command(flatten)]
    ortho: OrthoArgs,
    /// The PNG to write.
    #[arg(long, value_name = "PNG")]
    out: PathBuf,
    /// Longer side of the preview, pixels.
    #[arg(long, default_value_t = 1600)]
    max_side: u32,
}

fn cache(command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Build(args) => cache_build(&args),
        CacheCommand::Info(args) => cache_info(&args),
        CacheCommand::Verify(args) => cache_verify(&args),
        CacheCommand::Query(args) => cache_query(&args),
        CacheCommand::Preview(args) => cache_preview(&args),
    }
}

#[cfg(not(feature = "gdal"))]
const NO_GDAL: &str = "this vimgeo was built without GDAL, which reading orthophotos needs; \
    rebuild it with `cargo build --release --features gdal` (needs the system GDAL: `apt-get install libgdal-dev`)";

#[cfg(not(feature = "gdal"))]
fn cache_build(_: &CacheBuildArgs) -> anyhow::Result<()> {
    bail!("`vimgeo cache build`: {NO_GDAL}")
}

#[cfg(not(feature = "gdal"))]
fn cache_preview(_: &CachePreviewArgs) -> anyhow::Result<()> {
    bail!("`vimgeo cache preview`: {NO_GDAL}")
}

#[cfg(feature = "gdal")]
impl OrthoArgs {
    fn resolve(&self) -> anyhow::Result<vimgeo::matching::build::OrthoOptions> {
        let bands = match self.bands.as_deref() {
            None => None,
            Some(&[r, g, b]) => Some([r, g, b]),
            Some(other) => bail!("--bands takes three band numbers R,G,B, not {other:?}"),
        };
        let percentiles = match self.percentiles[..] {
            [lo, hi] => [lo, hi],
            _ => bail!("--percentiles takes LOW,HIGH"),
        };
        Ok(vimgeo::matching::build::OrthoOptions {
            crs: self.crs.clone(),
            bands,
            percentiles: Some(percentiles),
            nodata: self.nodata,
        })
    }
}

#[cfg(feature = "gdal")]
impl CacheBuildArgs {
    /// The tiling spec: explicit footprints, or the footprints of a height band.
    fn spec(&self) -> anyhow::Result<vimgeo::matching::build::TilingSpec> {
        use vimgeo::matching::build::TilingSpec;
        match (&self.footprint, &self.height, self.hfov_deg) {
            (Some(_), Some(_), _) => bail!("give --footprint or --height, not both"),
            (Some(f), None, _) => Ok(TilingSpec::from_footprints(f.clone(), self.stride)?),
            (None, Some(band), Some(hfov)) => {
                let (low, high) = parse_height_band(band)?;
                Ok(TilingSpec::from_height_band(
                    low,
                    high,
                    hfov,
                    self.scales,
                    self.stride,
                )?)
            }
            (None, Some(_), None) => bail!(
                "--height needs the camera's --hfov-deg (or give the tile size with --footprint METRES)"
            ),
            (None, None, _) => {
                bail!("give the tile size: --footprint METRES, or --height LOW..HIGH with --hfov-deg")
            }
        }
    }
}

/// Parses `80..150` (or `80-150`, or a single height `120`).
#[cfg_attr(not(feature = "gdal"), allow(dead_code))]
fn parse_height_band(text: &str) -> anyhow::Result<(f64, f64)> {
    let parse = |s: &str| {
        s.trim()
            .parse::<f64>()
            .with_context(|| format!("--height {text}: {s:?} is not a number of metres"))
    };
    match text.split_once("..").or_else(|| text.split_once('-')) {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => {
            let h = parse(text)?;
            Ok((h, h))
        }
    }
}

#[cfg(feature = "gdal")]
fn cache_build(args: &CacheBuildArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use vimgeo::matching::build::{build_cache, BuildOutcome, CacheBuildConfig, EncodeOptions};
    use vimgeo::matching::EmbeddingDtype;

    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.max_nodata) {
        bail!("--max-nodata is a fraction in 0..=1");
    }
    let config = CacheBuildConfig {
        ortho: args.ortho.ortho.clone(),
        ortho_options: args.ortho.resolve()?,
        spec: args.spec()?,
        out: args.out.clone(),
        dtype: match args.dtype {
            DtypeArg::F16 => EmbeddingDtype::F16,
            DtypeArg::F32 => EmbeddingDtype::F32,
        },
        encode: EncodeOptions {
            batch: args.batch,
            max_nodata: args.max_nodata,
            stop_after_batches: None,
        },
    };
    let mut encoder = args.engine.open()?;
    let terminal = std::io::stderr().is_terminal();
    let mut last_logged = Instant::now();
    let mut progress = |p: &vimgeo::matching::build::Progress| {
        let eta = p
            .eta()
            .map_or_else(|| "?".to_string(), |d| format!("{:.0} s", d.as_secs_f64()));
        let line = format!(
            "{}/{} tiles ({:.0}%), {} skipped as nodata, {:.1} tiles/s, ETA {eta}",
            p.done,
            p.total,
            100.0 * p.done as f64 / p.total.max(1) as f64,
            p.skipped,
            p.rate()
        );
        if terminal {
            let width = 30;
            let filled = width * p.done / p.total.max(1);
            eprint!(
                "\r[{}{}] {line}   ",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            if p.done == p.total {
                eprintln!();
            }
        } else if p.done == p.total || last_logged.elapsed() >= Duration::from_secs(5) {
            last_logged = Instant::now();
            log::info!("{line}");
        }
    };
    match build_cache(&config, encoder.as_mut(), &mut progress)
        .with_context(|| format!("cannot build the cache {}", args.out.display()))?
    {
        BuildOutcome::Written(report) => {
            let scales: Vec<String> = report
                .footprints_m
                .iter()
                .zip(&report.per_scale)
                .map(|(f, n)| format!("{f:.1} m x {n}"))
                .collect();
            println!(
                "wrote {}: {} tiles ({} planned: {}; {} skipped as nodata; {} resumed) in {:.1} s",
                report.out.display(),
                report.written,
                report.planned,
                scales.join(", "),
                report.skipped_nodata,
                report.resumed,
                report.elapsed.as_secs_f64()
            );
        }
        BuildOutcome::Stopped { done, total } => {
            println!("stopped after {done} of {total} tiles; run the same command again to resume")
        }
    }
    Ok(())
}

fn cache_info(args: &CacheInfoArgs) -> anyhow::Result<()> {
    use vimgeo::matching::{CacheExpectation, TileCache};
    let cache = TileCache::open(&args.cache, &CacheExpectation::default())?;
    print!("{}", cache.summary());
    Ok(())
}

fn cache_verify(args: &CacheVerifyArgs) -> anyhow::Result<()> {
    use vimgeo::encoder::CheckedModel;
    use vimgeo::matching::{CacheExpectation, TileCache};
    let model = match &args.model {
        Some(path) => Some(
            CheckedModel::open(path)
                .with_context(|| format!("cannot open model {}", path.display()))?,
        ),
        None => None,
    };
    let expect = CacheExpectation {
        model_sha256: model.as_ref().map(|m| m.manifest().onnx_sha256.as_str()),
        embedding_dim: model.as_ref().map(|m| m.manifest().output.dim as usize),
    };
    let cache = TileCache::open(&args.cache, &expect)?;
    let meta = cache.meta();
    println!(
        "ok: {} ({} tiles x {} {}, checksum verified{})",
        args.cache.display(),
        cache.len(),
        cache.dim(),
        meta.dtype,
        match &model {
            Some(m) => format!(", built with model {}", m.manifest().name),
            None => format!(", model {} not checked: pass --model", meta.model_name),
        }
    );
    Ok(())
}

/// One match in `vimgeo cache query`'s output.
#[derive(serde::Serialize)]
struct QueryMatch {
    rank: usize,
    lat: f64,
    lon: f64,
    similarity: f32,
    tile: usize,
    ground_size_m: f32,
    scale: f32,
}

/// One line of `vimgeo cache query`'s output.
#[derive(serde::Serialize)]
struct QueryLine {
    image: String,
    matches: Vec<QueryMatch>,
}

fn cache_query(args: &CacheQueryArgs) -> anyhow::Result<()> {
    use vimgeo::matching::{CacheExpectation, PriorWindow, TileCache};
    let prior = match args.prior.as_deref() {
        None => None,
        Some(&[lat, lon, radius_m]) => Some(PriorWindow { lat, lon, radius_m }),
        Some(other) => bail!("--prior takes LAT,LON,RADIUS_M, not {other:?}"),
    };
    let mut encoder = args.engine.open()?;
    let manifest = encoder.manifest();
    let cache = TileCache::open(
        &args.cache,
        &CacheExpectation {
            model_sha256: Some(&manifest.onnx_sha256),
            embedding_dim: Some(manifest.output.dim as usize),
        },
    )?;
    for path in &args.images {
        let image = read_image(path)?;
        let embedding = encoder
            .encode(&image)
            .with_context(|| format!("cannot encode {}", path.display()))?;
        let matches = cache
            .search(&embedding, args.top_k, prior.as_ref())
            .with_context(|| {
                format!(
                    "cannot search {} for {}",
                    args.cache.display(),
                    path.display()
                )
            })?;
        let line = QueryLine {
            image: path.display().to_string(),
            matches: matches
                .iter()
                .enumerate()
                .map(|(i, m)| QueryMatch {
                    rank: i + 1,
                    lat: m.lat,
                    lon: m.lon,
                    similarity: m.similarity,
                    tile: m.index,
                    ground_size_m: m.ground_size_m,
                    scale: m.scale,
                })
                .collect(),
        };
        println!(
            "{}",
            serde_json::to_string(&line).context("cannot serialise the matches")?
        );
    }
    Ok(())
}

#[cfg(feature = "gdal")]
fn cache_preview(args: &CachePreviewArgs) -> anyhow::Result<()> {
    use vimgeo::matching::build::{render_preview, Orthophoto, PreviewTile};
    use vimgeo::matching::{CacheExpectation, TileCache};
    let cache = TileCache::open(&args.cache, &CacheExpectation::default())?;
    let ortho = Orthophoto::open(&args.ortho.ortho, &args.ortho.resolve()?)?;
    let scales = &cache.meta().scales;
    let tiles: Vec<PreviewTile> = (0..cache.len())
        .filter_map(|i| cache.tile(i))
        .map(|t| PreviewTile {
            lat: t.lat,
            lon: t.lon,
            ground_size_m: f64::from(t.ground_size_m),
            // A tile's scale is one of the cache's scales; its position there picks the colour.
            scale: scales
                .iter()
                .position(|s| (*s as f32 - t.scale).abs() <= 1e-3 * t.scale.abs().max(1.0))
                .unwrap_or(0) as u16,
        })
        .collect();
    let report = render_preview(&ortho, &tiles, args.max_side, &args.out)?;
    let legend: Vec<String> = report
        .legend
        .iter()
        .zip(scales)
        .map(|(c, s)| format!("{s:.1} m {c}"))
        .collect();
    println!(
        "wrote {} ({} x {} px): {} tiles drawn ({}){}",
        report.out.display(),
        report.width,
        report.height,
        report.drawn,
        legend.join(", "),
        if report.outside > 0 {
            format!(
                "; {} tiles lie outside this orthophoto: is it the cache's imagery?",
                report.outside
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

#[derive(Debug, Args)]
struct BenchSearchArgs {
    /// Tiles in the synthetic cache.
    #[arg(long, default_value_t = 1_000_000)]
    tiles: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Storage types to time, each on the same data.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [DtypeArg::F16, DtypeArg::F32])]
    dtypes: Vec<DtypeArg>,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed queries per storage type.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Seed of the synthetic embeddings and queries.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Raw little-endian f32 embeddings (rows x dim, normalised) instead of synthetic ones.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Raw little-endian f32 queries (q x dim) instead of synthetic ones.
    #[arg(long, value_name = "PATH")]
    queries: Option<PathBuf>,
    /// Also write a cache of --tiles rows into this folder, load it and report the memory it takes.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn bench_search(args: &BenchSearchArgs) -> anyhow::Result<()> {
    use vimgeo::matching::{BenchSearchConfig, EmbeddingDtype};
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let config = BenchSearchConfig {
        tiles: args.tiles,
        dim: args.dim,
        dtypes: args
            .dtypes
            .iter()
            .map(|d| match d {
                DtypeArg::F16 => EmbeddingDtype::F16,
                DtypeArg::F32 => EmbeddingDtype::F32,
            })
            .collect(),
        k: args.top_k,
        threads: args.threads.unwrap_or(0),
        iters: args.iters.max(1),
        seed: args.seed,
        data: args.data.clone(),
        queries: args.queries.clone(),
        cache_dir: args.cache_dir.clone(),
    };
    let report = vimgeo::matching::bench_search(&config).context("search benchmark failed")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("cannot serialise the report")?
        );
    } else {
        print!("{report}");
    }
    Ok(())
}
