//! A bulk export's job (HL7 FHIR Bulk Data Access v2, "Bulk Data Export Operation Request
//! Flow"): the matching AuditEvents, oldest first, rendered one per line into NDJSON files of
//! at most [`LINES_PER_FILE`] lines, read from the read pool in keyset batches, so memory stays
//! the same whatever the trail's size and the writer is used only for a progress row per batch.
//!
//! Files are kept gzip-compressed ([`stored_name`]): a million AuditEvents are about 2.6 GB of
//! NDJSON but an eighteenth of that compressed, and writing the full size was what made an export
//! slow and what made look-ups' commits wait behind its writeback. A download is sent as stored
//! to a client that accepts gzip (a Bulk Data file request is a plain GET, so HTTP's content
//! negotiation applies: RFC 9110 §12.5.3 `Accept-Encoding`), and inflated on the fly for one
//! that does not.
//!
//! The export is a snapshot as of its kick-off (the manifest's `transactionTime`): rows recorded
//! later are not included, so a busy service cannot keep it running. A cancelled export (its
//! row no longer `running`) stops at its next batch and deletes what it wrote. Its end — how
//! many AuditEvents, in which files — is itself an AuditEvent, by the requester.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::audit::{later_row, AccessContext, Interaction};
use crate::domain::Clock;
use crate::store::audit::{self as audit_store, AuditFilter, Order};
use crate::store::exports;
use crate::store::{micros, Store, StoreError};

/// Lines per NDJSON file: a SIEM can fetch files in parallel, and a failed download costs one.
pub const LINES_PER_FILE: usize = 100_000;

/// Rows read per batch (one read transaction each, then a progress update).
const BATCH: usize = 5_000;

/// Compressed bytes written between a file's syncs. Left to the kernel, a whole file's worth of
/// dirty pages is flushed at once, and on ext4 a look-up's commit (the audit row's fsync) waits
/// behind all of it. Synced this often, a commit waits for a few milliseconds of it at most.
const SYNC_EVERY: usize = 1 << 20;

/// The kick-off's interaction, for its audit rows.
pub const EXPORT: Interaction = Interaction {
    resource_type: "AuditEvent",
    subtype: "operation",
    listable: false,
};

/// Everything the job needs, moved to its thread.
pub struct Job {
    pub id: String,
    /// `None`: the criteria cannot match anything (the export is empty).
    pub filter: Option<AuditFilter>,
    pub dir: PathBuf,
    pub store: Store,
    pub clock: Clock,
    pub expiry: std::time::Duration,
    /// The kick-off's caller and request, for the completion's audit row.
    pub ctx: AccessContext,
    /// Whether the job's thread runs at the lowest priority (`bulk_low_priority`).
    pub lowered: bool,
}

/// Where an export's files are kept.
pub fn files_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// A file's name: `AuditEvent-{n}.ndjson`, from 1.
pub fn file_name(n: usize) -> String {
    format!("AuditEvent-{n}.ndjson")
}

/// The name a file is kept under in its export's directory: gzip-compressed.
pub fn stored_name(name: &str) -> String {
    format!("{name}.gz")
}

/// How fast, not how small: level 1 already shrinks these repetitive lines eighteenfold, and
/// higher levels cost the export's thread several times more for a few percent.
const LEVEL: flate2::Compression = flate2::Compression::fast();

/// The file under a gzip stream, counting the compressed bytes written since the last sync.
struct Counted {
    file: std::io::BufWriter<std::fs::File>,
    unsynced: usize,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

type Out = flate2::write::GzEncoder<Counted>;

fn create(path: &Path) -> std::io::Result<Out> {
    let file = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(path)?);
    Ok(flate2::write::GzEncoder::new(
        Counted { file, unsynced: 0 },
        LEVEL,
    ))
}

/// Syncs what has reached the file once [`SYNC_EVERY`] bytes of it are unsynced.
fn sync_some(out: &mut Out) -> std::io::Result<()> {
    let inner = out.get_mut();
    if inner.unsynced >= SYNC_EVERY {
        inner.file.flush()?;
        inner.file.get_ref().sync_data()?;
        inner.unsynced = 0;
    }
    Ok(())
}

/// Ends the gzip stream and makes the whole file durable.
fn close(out: Out) -> std::io::Result<()> {
    let mut inner = out.finish()?;
    inner.file.flush()?;
    inner.file.get_ref().sync_all()
}

/// Starts the job on a thread of its own; a thread that cannot be started fails the export.
pub fn start(job: Job) {
    let (store, id, clock) = (job.store.clone(), job.id.clone(), job.clock.clone());
    let spawned = std::thread::Builder::new()
        .name("cpis-export".into())
        .spawn(move || run(job));
    if let Err(e) = spawned {
        log::error!("export {id}: its thread could not start: {e}");
        let now = micros(clock());
        let failed = exports::Finished {
            status: exports::FAILED,
            written: 0,
            files: "[]".into(),
            error: Some("the export could not be started".into()),
            expires: now,
        };
        if let Err(e) = store.write_blocking(move |c| {
            exports::finish(c, &id, &failed, now).map_err(StoreError::from)
        }) {
            log::error!("the failed export could not be recorded: {e}");
        }
    }
}

/// Why a job stopped early.
enum Stop {
    Cancelled,
    Failed(String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(format!("the audit trail could not be read: {e}"))
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Failed(format!("an export file could not be written: {e}"))
    }
}

fn run(job: Job) {
    // Rendering a trail is bulk work: this thread is the export's own, so it is lowered for
    // good (see `lane`).
    if job.lowered {
        crate::lane::lower_this_thread();
    }
    let dir = files_dir(&job.dir, &job.id);
    let result = write_files(&job, &dir);
    let now = micros((job.clock)());
    let expires = now.saturating_add(i64::try_from(job.expiry.as_micros()).unwrap_or(i64::MAX));
    let (finished, desc, outcome) = match result {
        Ok((written, files)) => {
            let listed: Vec<(String, usize)> = files;
            let desc = format!(
                "export {}: {written} AuditEvents in {} files",
                job.id,
                listed.len()
            );
            (
                exports::Finished {
                    status: exports::COMPLETE,
                    written: i64::try_from(written).unwrap_or(i64::MAX),
                    files: serde_json::to_string(&listed).unwrap_or_else(|_| "[]".into()),
                    error: None,
                    expires,
                },
                desc,
                "0",
            )
        }
        Err(Stop::Cancelled) => {
            let _ = std::fs::remove_dir_all(&dir);
            log::info!("export {} cancelled", job.id);
            return;
        }
        Err(Stop::Failed(why)) => {
            let _ = std::fs::remove_dir_all(&dir);
            log::error!("export {} failed: {why}", job.id);
            (
                exports::Finished {
                    status: exports::FAILED,
                    written: 0,
                    files: "[]".into(),
                    error: Some(why.clone()),
                    expires,
                },
                format!("export {} failed: {why}", job.id),
                "8",
            )
        }
    };
    let row = later_row(
        &job.ctx,
        EXPORT,
        job.filter.as_ref().and_then(|f| f.patient.clone()),
        now,
        outcome,
        desc,
    );
    let id = job.id.clone();
    let ended = job.store.write_blocking(move |c| {
        let still_running = exports::finish(c, &id, &finished, now)?;
        if still_running {
            audit_store::insert(c, &row)?;
        }
        Ok::<_, StoreError>(still_running)
    });
    match ended {
        Ok(true) => log::info!("export {} ended", job.id),
        // Cancelled while its last batch was written.
        Ok(false) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(e) => log::error!("export {}: its end could not be recorded: {e}", job.id),
    }
}

/// Writes the files; returns how many AuditEvents and each file's name and line count. One
/// thread reads a batch and writes it: a second thread reading ahead exported 1,000,000 in about
/// 4 s instead of 6.5 but took enough of the two cores to lift the p99 of look-ups beside it by
/// a few milliseconds (README, "The audit team's searches and export").
fn write_files(job: &Job, dir: &Path) -> Result<(usize, Vec<(String, usize)>), Stop> {
    std::fs::create_dir_all(dir)?;
    let mut files: Vec<(String, usize)> = Vec::new();
    let mut out: Option<Out> = None;
    let mut after: Option<String> = None;
    let mut written = 0usize;
    let mut line = Vec::with_capacity(4096);
    let Some(filter) = &job.filter else {
        return Ok((0, files));
    };
    loop {
        let page = job.store.read_blocking(|c| {
            audit_store::search(
                c,
                filter,
                Order::OldestFirst,
                after.as_deref(),
                BATCH,
                false,
            )
            .map_err(StoreError::from)
        })?;
        for row in &page.rows {
            let file = match out.as_mut() {
                Some(f) => f,
                None => {
                    let name = file_name(files.len() + 1);
                    let created = create(&dir.join(stored_name(&name)))?;
                    files.push((name, 0));
                    out.insert(created)
                }
            };
            line.clear();
            crate::fhir::audit_event::write_json(row, &mut line)
                .map_err(|e| Stop::Failed(format!("an AuditEvent could not be written: {e}")))?;
            line.push(b'\n');
            file.write_all(&line)?;
            sync_some(file)?;
            written += 1;
            if let Some(last) = files.last_mut() {
                last.1 += 1;
                if last.1 == LINES_PER_FILE {
                    if let Some(f) = out.take() {
                        close(f)?;
                    }
                }
            }
        }
        let (id, now) = (job.id.clone(), micros((job.clock)()));
        let count = i64::try_from(written).unwrap_or(i64::MAX);
        let running = job.store.write_blocking(move |c| {
            exports::progress(c, &id, count, now).map_err(StoreError::from)
        })?;
        if !running {
            return Err(Stop::Cancelled);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if let Some(f) = out.take() {
        close(f)?;
    }
    Ok((written, files))
}
