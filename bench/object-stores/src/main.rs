//! Which embedded store should hold sesame's objects? Each candidate gets
//! the same work, shaped like sesame's: a full build (objects written in
//! batches of 4,096, made durable once at the end), a thousand small
//! publishes (25 objects each, durable each time), random reads by hash from
//! two threads (the router), and a garbage collection (delete a tenth, then
//! write as much again: is the space reused?).
//!
//! Usage: object-stores DIR [OBJECTS] [CANDIDATES...]
//! (candidates: files lmdb redb fjall sqlite; default all; and LMDB with
//! other flags: lmdb-nometasync, lmdb-nosync, lmdb-nordahead).

use std::path::{Path, PathBuf};

use redb::ReadableDatabase;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng, rngs::SmallRng};
use rayon::prelude::*;

const BATCH: usize = 4096;
const PUBLISHES: usize = 1000;
const PER_PUBLISH: usize = 25;
const READS: usize = 200_000;

/// One candidate store. Keys are 32-byte blake3 hashes.
trait Candidate: Sync {
    /// Stores a batch in one transaction; durable only after `sync` unless
    /// `durable`.
    fn put_batch(&self, batch: &[([u8; 32], Vec<u8>)], durable: bool);
    fn sync(&self);
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>>;
    fn delete(&self, keys: &[[u8; 32]]);
}

/// Page-like bytes: a template with the item's words in it, 600–7,500 bytes.
fn page(rng: &mut SmallRng, n: u64) -> ([u8; 32], Vec<u8>) {
    const WORDS: [&str; 12] =
        ["sprite", "pixel", "tag", "owner", "gallery", "python", "package", "release", "web", "data", "tool", "api"];
    let len = rng.random_range(600..7500);
    let mut s = format!("<!doctype html><html lang=en><head><meta charset=utf-8><title>item {n}</title>");
    while s.len() < len {
        s.push_str("<li><a href=\"/sprites/");
        s.push_str(&rng.random::<u32>().to_string());
        s.push_str("/\">");
        for _ in 0..rng.random_range(2..8) {
            s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            s.push(' ');
        }
        s.push_str("</a></li>\n");
    }
    s.truncate(len);
    let bytes = s.into_bytes();
    (*blake3::hash(&bytes).as_bytes(), bytes)
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn du(path: &Path) -> u64 {
    let out = std::process::Command::new("du").arg("-sB1").arg(path).output().expect("du");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

// --- one file per object (sesame's LocalDir today) ---------------------------

struct Files(PathBuf);

impl Candidate for Files {
    fn put_batch(&self, batch: &[([u8; 32], Vec<u8>)], durable: bool) {
        batch.par_iter().for_each(|(k, v)| {
            let name = hex(k);
            let dir = self.0.join(&name[..2]);
            let path = dir.join(&name);
            let staging = dir.join(format!("{name}.tmp"));
            if std::fs::write(&staging, v).is_err() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&staging, v).unwrap();
            }
            std::fs::rename(&staging, &path).unwrap();
        });
        if durable {
            self.sync();
        }
    }
    fn sync(&self) {
        let dir = std::fs::File::open(&self.0).unwrap();
        rustix_syncfs(&dir);
    }
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let name = hex(key);
        std::fs::read(self.0.join(&name[..2]).join(&name)).ok()
    }
    fn delete(&self, keys: &[[u8; 32]]) {
        for k in keys {
            let name = hex(k);
            let _ = std::fs::remove_file(self.0.join(&name[..2]).join(&name));
        }
    }
}

fn rustix_syncfs(file: &std::fs::File) {
    // syncfs(2) through the libc the standard library links; sync_all of the
    // directory would not flush the files in it.
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn syncfs(fd: i32) -> i32;
    }
    // SAFETY: a valid open descriptor; syncfs only reads it.
    assert_eq!(unsafe { syncfs(file.as_raw_fd()) }, 0);
}

// --- LMDB (heed) -------------------------------------------------------------

struct Lmdb {
    env: &'static heed::Env,
    /// Whether commits leave something unflushed until `sync` (`NO_META_SYNC`:
    /// the meta page; `NO_SYNC`: everything).
    lazy_meta: bool,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
}

impl Lmdb {
    fn open(dir: &Path, flags: heed::EnvFlags) -> Lmdb {
        std::fs::create_dir_all(dir).unwrap();
        let mut options = heed::EnvOpenOptions::new();
        // SAFETY: the flags compared here keep the file whole on a crash
        // (see `lmdb_flags`); one environment per path in this process, as
        // heed requires.
        let env = unsafe { options.flags(flags).map_size(1 << 40).max_dbs(1).open(dir).unwrap() };
        let env: &'static heed::Env = Box::leak(Box::new(env));
        let db = env
            .create_databases_and_commit(env.write_txn().unwrap(), |dbo, w| {
                dbo.create_database(w, Some("objects")).map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .unwrap()
            .unwrap_commit();
        Lmdb { env, db, lazy_meta: flags.intersects(heed::EnvFlags::NO_META_SYNC | heed::EnvFlags::NO_SYNC) }
    }
}

impl Candidate for Lmdb {
    fn put_batch(&self, batch: &[([u8; 32], Vec<u8>)], durable: bool) {
        // Every commit is durable (fsync) in LMDB's default mode; its
        // no-sync modes can corrupt the file on a power loss.
        let mut w = self.env.write_txn().unwrap();
        for (k, v) in batch {
            self.db.put(&mut w, k, v).unwrap();
        }
        w.commit().unwrap();
        if durable {
            self.sync();
        }
    }
    fn sync(&self) {
        // Flushes the meta page a `NO_META_SYNC` commit left unflushed.
        if self.lazy_meta {
            self.env.force_sync().unwrap();
        }
    }
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let r = self.env.read_txn().unwrap();
        self.db.get(&r, key).unwrap().map(<[u8]>::to_vec)
    }
    fn delete(&self, keys: &[[u8; 32]]) {
        let mut w = self.env.write_txn().unwrap();
        for k in keys {
            self.db.delete(&mut w, k).unwrap();
        }
        w.commit().unwrap();
    }
}

// --- redb --------------------------------------------------------------------

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("objects");

struct Redb(redb::Database);

impl Candidate for Redb {
    fn put_batch(&self, batch: &[([u8; 32], Vec<u8>)], _durable: bool) {
        let w = self.0.begin_write().unwrap();
        {
            let mut t = w.open_table(TABLE).unwrap();
            for (k, v) in batch {
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        w.commit().unwrap();
    }
    fn sync(&self) {}
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let r = self.0.begin_read().unwrap();
        let t = r.open_table(TABLE).unwrap();
        t.get(key.as_slice()).unwrap().map(|v| v.value().to_vec())
    }
    fn delete(&self, keys: &[[u8; 32]]) {
        let w = self.0.begin_write().unwrap();
        {
            let mut t = w.open_table(TABLE).unwrap();
            for k in keys {
                t.remove(k.as_slice()).unwrap();
            }
        }
        w.commit().unwrap();
    }
}

// --- fjall -------------------------------------------------------------------

struct Fjall {
    db: fjall::Database,
    objects: fjall::Keyspace,
}

impl Candidate for Fjall {
    fn put_batch(&self, batch: &[([u8; 32], Vec<u8>)], durable: bool) {
        let mut b = self.db.batch();
        for (k, v) in batch {
            b.insert(&self.objects, k.as_slice(), v.as_slice());
        }
        b.commit().unwrap();
        if durable {
            self.sync();
        }
    }
    fn sync(&self) {
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        self.objects.get(key).unwrap().map(|v| v.to_vec())
    }
    fn delete(&self, keys: &[[u8; 32]]) {
        let mut b = self.db.batch();
        for k in keys {
            b.remove(&self.objects, k.as_slice());
        }
        b.commit().unwrap();
        self.sync();
    }
}

// --- SQLite ------------------------------------------------------------------

struct Sqlite(PathBuf, std::sync::Mutex<rusqlite::Connection>);

thread_local! {
    static READER: std::cell::RefCell<Option<rusqlite::Connection>> = const { std::cell::RefCell::new(None) };
}

impl Sqlite {
    fn open(path: &Path) -> Sqlite {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS objects (hash BLOB PRIMARY KEY, bytes BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        Sqlite(path.into(), std::sync::Mutex::new(c))
    }
}

impl Candidate for Sqlite {
    fn put_batch(&self, batch: &[([u8; 32], Vec<u8>)], _durable: bool) {
        let mut c = self.1.lock().unwrap();
        let t = c.transaction().unwrap();
        {
            let mut s = t.prepare_cached("INSERT OR IGNORE INTO objects VALUES (?1, ?2)").unwrap();
            for (k, v) in batch {
                s.execute((k.as_slice(), v.as_slice())).unwrap();
            }
        }
        t.commit().unwrap();
    }
    fn sync(&self) {}
    fn get(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        READER.with(|r| {
            let mut r = r.borrow_mut();
            let c = r.get_or_insert_with(|| rusqlite::Connection::open(&self.0).unwrap());
            let mut s = c.prepare_cached("SELECT bytes FROM objects WHERE hash = ?1").unwrap();
            s.query_row([key.as_slice()], |row| row.get(0)).ok()
        })
    }
    fn delete(&self, keys: &[[u8; 32]]) {
        let mut c = self.1.lock().unwrap();
        let t = c.transaction().unwrap();
        for k in keys {
            t.execute("DELETE FROM objects WHERE hash = ?1", [k.as_slice()]).unwrap();
        }
        t.commit().unwrap();
    }
}

// --- the work ----------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
}

fn run(name: &str, store: &dyn Candidate, path: &Path, objects: u64) {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut keys = Vec::with_capacity(objects as usize);
    let mut bytes = 0u64;
    // Only the stores' work is timed, not making the pages.
    let mut build = Duration::ZERO;
    let mut n = 0;
    while n < objects {
        let batch: Vec<_> = (n..objects.min(n + BATCH as u64)).map(|i| page(&mut rng, i)).collect();
        n += batch.len() as u64;
        bytes += batch.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
        keys.extend(batch.iter().map(|(k, _)| *k));
        let started = Instant::now();
        store.put_batch(&batch, false);
        build += started.elapsed();
    }
    let started = Instant::now();
    store.sync();
    build += started.elapsed();
    let size = du(path);

    let mut publish = Vec::with_capacity(PUBLISHES);
    for i in 0..PUBLISHES {
        let batch: Vec<_> = (0..PER_PUBLISH).map(|j| page(&mut rng, objects + (i * PER_PUBLISH + j) as u64)).collect();
        keys.extend(batch.iter().map(|(k, _)| *k));
        let t = Instant::now();
        store.put_batch(&batch, true);
        publish.push(t.elapsed());
    }
    publish.sort();

    let picks: Vec<[u8; 32]> = (0..READS).map(|_| keys[rng.random_range(0..keys.len())]).collect();
    let t = Instant::now();
    let found: usize = picks.par_iter().map(|k| usize::from(store.get(k).is_some())).sum();
    let reads = t.elapsed();
    assert_eq!(found, READS, "{name}: every key reads back");

    let doomed: Vec<[u8; 32]> = keys.iter().step_by(10).copied().collect();
    let t = Instant::now();
    for chunk in doomed.chunks(BATCH) {
        store.delete(chunk);
    }
    store.sync();
    let gc = t.elapsed();
    let after_gc = du(path);
    let refill: Vec<_> = (0..doomed.len()).map(|i| page(&mut rng, u64::MAX / 2 + i as u64)).collect();
    for chunk in refill.chunks(BATCH) {
        store.put_batch(chunk, false);
    }
    store.sync();
    let after_refill = du(path);
    println!(
        "| {name} | {:.1} s | {:.0} MB ({:.2}× the bytes) | {:.2} / {:.2} ms | {:.0} | {:.1} s | {:.0} MB | {:.0} MB |",
        build.as_secs_f64(),
        size as f64 / 1e6,
        size as f64 / bytes as f64,
        percentile(&publish, 0.5),
        percentile(&publish, 0.99),
        READS as f64 / reads.as_secs_f64(),
        gc.as_secs_f64(),
        after_gc as f64 / 1e6,
        after_refill as f64 / 1e6,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: object-stores DIR [OBJECTS] [CANDIDATES...]"));
    let objects: u64 = args.next().map_or(490_000, |n| n.parse().expect("OBJECTS is a number"));
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = ["files", "lmdb", "redb", "fjall", "sqlite"].map(String::from).to_vec();
    }
    println!("{objects} objects written in batches of {BATCH}; {PUBLISHES} publishes of {PER_PUBLISH}; {READS} random reads on 2 threads; a tenth deleted, then as much written again");
    println!();
    println!(
        "| store | build (write + sync) | on disk | publish p50 / p99 | reads/s | delete a tenth | after delete | after refill |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for name in names {
        let path = dir.join(&name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        // Start each candidate with a cold page cache as far as we can.
        let _ = std::process::Command::new("sync").status();
        match name.as_str() {
            "files" => run(&name, &Files(path.clone()), &path, objects),
            "lmdb" => run(&name, &Lmdb::open(&path, heed::EnvFlags::empty()), &path, objects),
            // One fdatasync per commit instead of two: the meta page is
            // flushed by the next commit or `sync` (LMDB keeps the file whole
            // on a crash; the last commit may be undone until then).
            "lmdb-nometasync" => run(&name, &Lmdb::open(&path, heed::EnvFlags::NO_META_SYNC), &path, objects),
            "lmdb-nosync" => run(&name, &Lmdb::open(&path, heed::EnvFlags::NO_SYNC), &path, objects),
            "lmdb-nordahead" => run(&name, &Lmdb::open(&path, heed::EnvFlags::NO_READ_AHEAD), &path, objects),
            "redb" => run(&name, &Redb(redb::Database::create(path.join("objects.redb")).unwrap()), &path, objects),
            "fjall" => {
                let db = fjall::Database::builder(&path).open().unwrap();
                let objects_ks = db.keyspace("objects", fjall::KeyspaceCreateOptions::default).unwrap();
                run(&name, &Fjall { db, objects: objects_ks }, &path, objects);
            }
            "sqlite" => run(&name, &Sqlite::open(&path.join("objects.db")), &path, objects),
            other => panic!("unknown candidate {other}"),
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}
