//! `cairn osd store-tool --data DIR ...`: a stopped OSD's object store, offline (as Ceph's
//! `ceph-objectstore-tool`): list its PGs and objects, dump an object's metadata and where
//! its chunks live, read an object out (checksums checked), and corrupt one stored byte
//! behind its checksum or overwrite bytes with fresh checksums, to rehearse detection and
//! repair.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use objectstore::{BlockFile, ChunkPlace, CollectionId, KvObjectStore, ObjectId, ObjectStore};
use osd::rocks::RocksEngine;
use placement::PgId;
use serde::Serialize;

use crate::Format;
use crate::map::print_json;

/// Objects listed per store call.
const LIST_PAGE: usize = 1024;

#[derive(Subcommand)]
pub enum StoreToolCommand {
    /// The PGs this OSD holds, or the objects of one PG.
    List { pg: Option<PgArg> },
    /// An object's size, version, xattrs and where each stored chunk lives.
    Dump { pg: PgArg, object: String },
    /// Reads an object to FILE, every chunk checked against its checksum.
    Get { pg: PgArg, object: String, file: PathBuf },
    /// Flips every bit of the stored byte at OFFSET of an object, leaving its checksum
    /// as it was (bit rot, on purpose).
    Corrupt {
        pg: PgArg,
        object: String,
        #[arg(long)]
        offset: u64,
    },
    /// Writes FILE's bytes over an object's at OFFSET, with fresh checksums and the
    /// version left as it was: a copy that reads clean but holds other bytes (what a bug
    /// or a mistaken hand leaves), which only a deep scrub's comparison finds.
    SetBytes {
        pg: PgArg,
        object: String,
        #[arg(long)]
        offset: u64,
        file: PathBuf,
    },
}

/// A PG as `list` prints its collections: `POOL.SEED`, or `POOL.SEEDsN` for shard N of an
/// erasure-coded PG (needed only where this OSD holds more than one shard of it, as after
/// its position in the PG moved).
#[derive(Clone, Copy, Debug)]
pub struct PgArg {
    pg: PgId,
    shard: Option<u8>,
}

impl std::str::FromStr for PgArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // Seeds are hex, so an `s` can only start the shard.
        let (pg, shard) = match s.split_once('s') {
            Some((pg, shard)) => {
                let shard = shard.parse().map_err(|_| {
                    format!("'{s}': the shard after 's' must be a number from 0 to 254")
                })?;
                (pg, Some(shard))
            }
            None => (s, None),
        };
        Ok(PgArg { pg: pg.parse()?, shard })
    }
}

impl std::fmt::Display for PgArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.shard {
            Some(shard) => write!(f, "{}s{shard}", self.pg),
            None => write!(f, "{}", self.pg),
        }
    }
}

type Store = KvObjectStore<RocksEngine>;

fn open(dir: &Path) -> Result<Store> {
    let store_dir = dir.join("store");
    if !store_dir.is_dir() {
        anyhow::bail!("{} holds no OSD store (no store/ directory)", dir.display());
    }
    // RocksDB locks its directory: a running OSD makes this fail, which is the point.
    let engine = RocksEngine::open(&store_dir).with_context(|| {
        format!("open the store in {} (is the OSD still running? stop it first)", dir.display())
    })?;
    let blocks = BlockFile::open(&dir.join(osd::daemon::BLOCK_FILE))?;
    KvObjectStore::with_blocks(engine, blocks)
        .with_context(|| format!("read the store in {}", dir.display()))
}

fn head(namespace: &str, name: &str) -> ObjectId {
    ObjectId {
        namespace: namespace.to_owned(),
        name: name.as_bytes().to_vec(),
        snap: objectstore::SNAP_HEAD,
    }
}

/// This OSD's collection of `pg`: its copy, or for an erasure-coded pool its shard (the
/// one named, where it holds several).
fn held(store: &Store, pg: PgArg) -> Result<CollectionId> {
    let found: Vec<CollectionId> = store
        .collections()?
        .into_iter()
        .filter(|c| c.pg == pg.pg && pg.shard.is_none_or(|s| s == c.shard))
        .collect();
    match found[..] {
        [c] => Ok(c),
        [] => anyhow::bail!("this OSD holds no copy of pg {pg}"),
        _ => {
            let names: Vec<String> = found.iter().map(|c| c.to_string()).collect();
            anyhow::bail!(
                "this OSD holds {} shards of pg {pg} ({}; one kept after its position moved): \
                 name one",
                found.len(),
                names.join(", ")
            )
        }
    }
}

/// The object, or a clear error naming the PG and what it holds. `name` is as `list`
/// prints it: `NAME`, or `NAMESPACE/NAME` for an object in a namespace.
fn existing(store: &Store, pg: PgArg, name: &str) -> Result<(CollectionId, ObjectId)> {
    let c = held(store, pg)?;
    let mut candidates = vec![head("", name)];
    if let Some((namespace, rest)) = name.split_once('/') {
        candidates.push(head(namespace, rest));
    }
    for oid in candidates {
        if store.stat(c, &oid)?.is_some() {
            return Ok((c, oid));
        }
    }
    anyhow::bail!("pg {pg} on this OSD has no object '{name}'")
}

#[derive(Serialize)]
struct Listed {
    name: String,
    size: u64,
    version: String,
}

#[derive(Serialize)]
struct Dumped {
    pg: String,
    name: String,
    size: u64,
    version: String,
    mtime_ms: i64,
    xattrs: Vec<String>,
    omap_keys: u64,
    chunks: Vec<(u32, ChunkPlace)>,
}

pub fn run(dir: &Path, format: Format, command: StoreToolCommand) -> Result<()> {
    let store = open(dir)?;
    match command {
        StoreToolCommand::List { pg: None } => list_pgs(&store, format),
        StoreToolCommand::List { pg: Some(pg) } => list_objects(&store, format, pg),
        StoreToolCommand::Dump { pg, object } => dump(&store, format, pg, object),
        StoreToolCommand::Get { pg, object, file } => {
            let (c, oid) = existing(&store, pg, &object)?;
            let data = store
                .read(c, &oid, 0, u64::MAX)
                .with_context(|| format!("read '{object}' of pg {pg}"))?;
            std::fs::write(&file, &data).with_context(|| format!("write {}", file.display()))?;
            if format == Format::Plain {
                println!("wrote {} bytes to {}", data.len(), file.display());
            }
            Ok(())
        }
        StoreToolCommand::Corrupt { pg, object, offset } => {
            let (c, oid) = existing(&store, pg, &object)?;
            let place = store.corrupt_byte(c, &oid, offset)?;
            match format {
                Format::Json => print_json(&serde_json::json!({ "corrupted": place }))?,
                Format::Plain => println!("flipped byte {offset} of '{object}': {place}"),
            }
            Ok(())
        }
        StoreToolCommand::SetBytes { pg, object, offset, file } => {
            set_bytes(&store, format, pg, object, offset, &file)
        }
    }
}

fn list_pgs(store: &Store, format: Format) -> Result<()> {
    let pgs: Vec<String> = store.collections()?.into_iter().map(|c| c.to_string()).collect();
    match format {
        Format::Json => print_json(&pgs)?,
        Format::Plain => pgs.iter().for_each(|pg| println!("{pg}")),
    }
    Ok(())
}

fn list_objects(store: &Store, format: Format, pg: PgArg) -> Result<()> {
    let c = held(store, pg)?;
    let mut objects = Vec::new();
    let mut after: Option<ObjectId> = None;
    loop {
        let page = store.list(c, after.as_ref(), LIST_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        objects.extend(page.into_iter().map(|(oid, meta)| Listed {
            name: oid.to_string(),
            size: meta.size,
            version: meta.version.to_string(),
        }));
    }
    match format {
        Format::Json => print_json(&objects)?,
        Format::Plain => {
            for o in &objects {
                println!("{}\t{}\t{}", o.name, o.size, o.version);
            }
        }
    }
    Ok(())
}

fn dump(store: &Store, format: Format, pg: PgArg, object: String) -> Result<()> {
    let (c, oid) = existing(store, pg, &object)?;
    let meta = store.stat(c, &oid)?.context("the object went away")?;
    let dumped = Dumped {
        pg: pg.to_string(),
        name: object,
        size: meta.size,
        version: meta.version.to_string(),
        mtime_ms: meta.mtime_ms,
        xattrs: meta.xattrs.keys().cloned().collect(),
        omap_keys: store.omap_all(c, &oid)?.len() as u64,
        chunks: store.chunk_places(c, &oid)?,
    };
    if format == Format::Json {
        return print_json(&dumped);
    }
    println!("pg {} object {}", dumped.pg, dumped.name);
    println!("size {} version {} mtime_ms {}", dumped.size, dumped.version, dumped.mtime_ms);
    println!("xattrs {:?} omap keys {}", dumped.xattrs, dumped.omap_keys);
    for (index, place) in &dumped.chunks {
        match place {
            ChunkPlace::Block { unit, crc } => {
                println!("chunk {index}: block unit {unit}, crc32c {crc:08x}")
            }
            ChunkPlace::Engine { bytes, crc } => {
                println!("chunk {index}: engine, {bytes} bytes, crc32c {crc:08x}")
            }
        }
    }
    Ok(())
}

/// Overwrites bytes of an object in place, inside its size.
fn set_bytes(
    store: &Store,
    format: Format,
    pg: PgArg,
    object: String,
    offset: u64,
    file: &Path,
) -> Result<()> {
    let (c, oid) = existing(store, pg, &object)?;
    let data = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let size = store.stat(c, &oid)?.context("the object went away")?.size;
    if offset.checked_add(data.len() as u64).is_none_or(|end| end > size) {
        anyhow::bail!(
            "{} bytes at {offset} run past the end of '{object}' ({size} bytes): \
             set-bytes overwrites, it does not grow an object",
            data.len()
        );
    }
    let written = data.len();
    let mut txn = objectstore::Transaction::default();
    txn.ops.push(objectstore::TxOp::Write { c, oid, offset, data: data.into() });
    store.apply(&txn)?;
    store.sync()?;
    match format {
        Format::Json => print_json(&serde_json::json!({ "written": written }))?,
        Format::Plain => println!("wrote {written} bytes at {offset} of '{object}'"),
    }
    Ok(())
}
