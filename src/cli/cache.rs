//! `vimgeo cache ...` (build, inspect, verify, query, preview tile caches) and `vimgeo bench search`.

use std::path::PathBuf;
#[cfg(feature = "ground")]
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use super::encoder::{read_image, EngineArgs};

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Cut an orthophoto into tiles at the camera's footprint, embed them and write a cache (resumable).
    #[cfg(feature = "ground")]
    Build(CacheBuildArgs),
    /// Cut an orthophoto into tiles (not in this build: it needs the ground tools).
    #[cfg(not(feature = "ground"))]
    Build(super::Absent),
    /// Print a cache's metadata and extent.
    Info(CacheInfoArgs),
    /// Check a cache's checksum, and that it belongs to a model when --model is given.
    Verify(CacheVerifyArgs),
    /// Embed images and print their best-matching tiles: one JSON line per image.
    Query(CacheQueryArgs),
    /// Draw a cache's tiles over its orthophoto (a PNG to check before a flight).
    #[cfg(feature = "ground")]
    Preview(CachePreviewArgs),
    /// Draw a cache's tiles over its orthophoto (not in this build: it needs the ground tools).
    #[cfg(not(feature = "ground"))]
    Preview(super::Absent),
}

/// How to read the orthophoto, shared by `cache build` and `cache preview`.
#[cfg(feature = "ground")]
#[derive(Debug, Args)]
pub(crate) struct OrthoArgs {
    /// The orthophoto: a GeoTIFF, or an image with a world file (then --crs is required); `data:NAME` for a
    /// file of the data folder (`make data`).
    #[arg(long, value_name = "IMG", value_parser = super::data_path)]
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

#[cfg(feature = "ground")]
#[derive(Debug, Args)]
pub(crate) struct CacheBuildArgs {
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
pub(crate) enum DtypeArg {
    F16,
    F32,
}

#[derive(Debug, Args)]
pub(crate) struct CacheInfoArgs {
    /// The cache file.
    cache: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CacheVerifyArgs {
    /// The cache file.
    cache: PathBuf,
    /// The model the cache must belong to (`.onnx` or its manifest).
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CacheQueryArgs {
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

#[cfg(feature = "ground")]
#[derive(Debug, Args)]
pub(crate) struct CachePreviewArgs {
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

pub(crate) fn cache(command: CacheCommand) -> anyhow::Result<()> {
    match command {
        #[cfg(feature = "ground")]
        CacheCommand::Build(args) => cache_build(&args),
        #[cfg(not(feature = "ground"))]
        CacheCommand::Build(_) => bail!("`vimgeo cache build`: {NO_GDAL}"),
        CacheCommand::Info(args) => cache_info(&args),
        CacheCommand::Verify(args) => cache_verify(&args),
        CacheCommand::Query(args) => cache_query(&args),
        #[cfg(feature = "ground")]
        CacheCommand::Preview(args) => cache_preview(&args),
        #[cfg(not(feature = "ground"))]
        CacheCommand::Preview(_) => bail!("`vimgeo cache preview`: {NO_GDAL}"),
    }
}

#[cfg(not(feature = "ground"))]
pub(crate) const NO_GDAL: &str = "this vimgeo is the onboard build, without the ground tools (vimgeo-ground, \
    which reads orthophotos through GDAL); rebuild it with the default features, `cargo build --release` \
    (needs the system GDAL: `apt-get install libgdal-dev`)";

#[cfg(feature = "ground")]
impl OrthoArgs {
    fn resolve(&self) -> anyhow::Result<vimgeo::build::OrthoOptions> {
        let bands = match self.bands.as_deref() {
            None => None,
            Some(&[r, g, b]) => Some([r, g, b]),
            Some(other) => bail!("--bands takes three band numbers R,G,B, not {other:?}"),
        };
        let percentiles = match self.percentiles[..] {
            [lo, hi] => [lo, hi],
            _ => bail!("--percentiles takes LOW,HIGH"),
        };
        Ok(vimgeo::build::OrthoOptions {
            crs: self.crs.clone(),
            bands,
            percentiles: Some(percentiles),
            nodata: self.nodata,
        })
    }
}

#[cfg(feature = "ground")]
impl CacheBuildArgs {
    /// The tiling spec: explicit footprints, or the footprints of a height band.
    fn spec(&self) -> anyhow::Result<vimgeo::build::TilingSpec> {
        use vimgeo::build::TilingSpec;
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
#[cfg(feature = "ground")]
pub(crate) fn parse_height_band(text: &str) -> anyhow::Result<(f64, f64)> {
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

#[cfg(feature = "ground")]
pub(crate) fn cache_build(args: &CacheBuildArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use vimgeo::build::{build_cache, BuildOutcome, CacheBuildConfig, EncodeOptions};
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
    let mut progress = |p: &vimgeo::build::Progress| {
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

pub(crate) fn cache_info(args: &CacheInfoArgs) -> anyhow::Result<()> {
    use vimgeo::matching::{CacheExpectation, TileCache};
    let cache = TileCache::open(&args.cache, &CacheExpectation::default())?;
    print!("{}", cache.summary());
    Ok(())
}

pub(crate) fn cache_verify(args: &CacheVerifyArgs) -> anyhow::Result<()> {
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
pub(crate) struct QueryMatch {
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
pub(crate) struct QueryLine {
    image: String,
    matches: Vec<QueryMatch>,
}

pub(crate) fn cache_query(args: &CacheQueryArgs) -> anyhow::Result<()> {
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

#[cfg(feature = "ground")]
pub(crate) fn cache_preview(args: &CachePreviewArgs) -> anyhow::Result<()> {
    use vimgeo::build::{render_preview, Orthophoto, PreviewTile};
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
pub(crate) struct BenchSearchArgs {
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

pub(crate) fn bench_search(args: &BenchSearchArgs) -> anyhow::Result<()> {
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
