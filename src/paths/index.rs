//! The file index of one workspace root: every file under it the way ripgrep sees them
//! (`.gitignore`/`.ignore` honoured, dot-directories included, `.git/` never, symlinks not
//! followed), kept fresh by a file watcher.
//!
//! The index is an immutable [`IndexData`] behind an [`ArcSwap`]: a lookup loads the current
//! one and never waits. Each directory the walk visited is watched (not recursively: ignored
//! trees such as `target/` or `node_modules/` cost no inotify watch and wake nothing); an
//! event there schedules a rebuild (debounced by [`DEBOUNCE`]), which also watches the new
//! directories it finds; the new data is swapped in whole, so a lookup sees either the old
//! tree or the new one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Files indexed per root before the walk stops (with a warning).
pub const DEFAULT_FILE_LIMIT: usize = 500_000;

/// Quiet time after a change before the index is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The longest a rebuild waits for the tree to go quiet.
pub const MAX_DELAY: Duration = Duration::from_millis(400);

/// One entry of a directory.
#[derive(Debug)]
pub struct Entry {
    pub name: Box<str>,
    /// `name` lowercased, once, for the typo walk.
    pub lower: Box<str>,
    pub is_dir: bool,
    /// The directory's id, or the file's.
    pub id: u32,
    /// [`crate::paths::text::char_mask`] of `lower`: most names are ruled out of a typo by
    /// it, before any edit distance.
    pub mask: u64,
}

/// FNV-1a: the index's maps hold keys made from the workspace's own file names, so a fast,
/// unkeyed hash is enough; model text only looks keys up, it never inserts one, so it cannot
/// lengthen a probe chain.
#[derive(Clone, Copy, Default)]
pub struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let hash = if self.0 == 0 { FNV_BASIS } else { self.0 };
        self.0 = fnv_extend(hash, bytes);
    }
}

/// Builds [`Fnv`] hashers.
pub type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

/// A map with [`Fnv`] hashing.
pub type FastMap<K, V> = HashMap<K, V, FnvBuild>;

/// File ids under one key: most suffixes belong to one file, which needs no allocation.
#[derive(Debug)]
enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    fn push(&mut self, id: u32) {
        match self {
            Ids::One(first) => *self = Ids::Many(vec![*first, id]),
            Ids::Many(ids) => ids.push(id),
        }
    }
}

/// The ids under a key (none when absent).
fn ids(found: Option<&Ids>) -> &[u32] {
    match found {
        Some(Ids::One(id)) => std::slice::from_ref(id),
        Some(Ids::Many(ids)) => ids,
        None => &[],
    }
}

fn push_id<K: std::hash::Hash + Eq>(map: &mut FastMap<K, Ids>, key: K, id: u32) {
    match map.entry(key) {
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Ids::One(id));
        }
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().push(id),
    }
}

/// The FNV-1a state before any byte.
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The key of a directory's lowercased path: its parent's key mixed with the [`name_hash`]
/// of its name (the root's key is 0), so a chain of names is looked up with one mix per name.
pub fn dir_key_child(parent: u64, name: u64) -> u64 {
    // splitmix64's finalizer over the pair.
    let mut z = parent.rotate_left(29) ^ name.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of a lowercased name in the child maps.
pub fn name_hash(lower_name: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = FnvBuild::default().build_hasher();
    hasher.write(lower_name.as_bytes());
    hasher.finish()
}

/// An immutable snapshot of the files under a root.
#[derive(Debug, Default)]
pub struct IndexData {
    /// Relative paths with `/` separators.
    files: Vec<Box<str>>,
    /// The same, lowercased.
    lower_files: Vec<Box<str>>,
    /// Lowercased relative path → file ids.
    lower: FastMap<Box<str>, Vec<u32>>,
    /// Lowercased file name → file ids.
    by_name: FastMap<Box<str>, Vec<u32>>,
    /// Hash of a lowercased proper suffix of two or more components (`src/lib.rs` of
    /// `crates/x/src/lib.rs`) → the files ending with it: the suffix lookup without touching
    /// every file of a common name.
    by_suffix: FastMap<u64, Ids>,
    /// Directory (relative, `""` for the root, id 0) → its id.
    dirs: FastMap<Box<str>, u32>,
    /// By directory id: its path and its entries.
    dir_paths: Vec<Box<str>>,
    dir_entries: Vec<Vec<Entry>>,
    /// (directory id, hash of a lowercased name) → the subdirectories / files of that name
    /// (case-insensitive descent without building paths).
    child_dirs: FastMap<(u32, u64), Ids>,
    child_files: FastMap<(u32, u64), Ids>,
    /// By directory id: the key of its lowercased path ([`dir_key_child`]), and that key →
    /// the directories (a whole chain of directories looked up at once).
    dir_keys: Vec<u64>,
    lower_dirs: FastMap<u64, Ids>,
    /// Lowercased extensions seen (without the dot).
    exts: HashSet<Box<str>>,
    /// Set when the walk stopped at the file limit.
    pub truncated: bool,
}

impl IndexData {
    /// Walks `root` (at most `limit` files).
    pub fn build(root: &Path, limit: usize) -> IndexData {
        let mut data = IndexData::default();
        data.dirs.insert("".into(), 0);
        data.dir_paths.push("".into());
        data.dir_entries.push(Vec::new());
        data.dir_keys.push(0);
        let walker = ignore::WalkBuilder::new(root)
            .hidden(false)
            .require_git(false)
            .follow_links(false)
            .filter_entry(|entry| entry.file_name() != ".git")
            .build();
        for entry in walker {
            let Ok(entry) = entry else { continue };
            if entry.depth() == 0 {
                continue;
            }
            let Some(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(root) else {
                continue;
            };
            let Some(rel) = rel_text(rel) else { continue };
            if !kind.is_dir() && data.files.len() >= limit {
                data.truncated = true;
                break;
            }
            let (parent, name) = split_last(&rel);
            // The walk yields a directory before what is in it.
            let Some(&parent_id) = data.dirs.get(parent) else {
                continue;
            };
            let lower: Box<str> = name.to_lowercase().into();
            let key = (parent_id, name_hash(&lower));
            let id = if kind.is_dir() {
                let id = data.dir_paths.len() as u32;
                let dir_key = dir_key_child(data.dir_keys[parent_id as usize], key.1);
                data.dir_keys.push(dir_key);
                push_id(&mut data.lower_dirs, dir_key, id);
                data.dirs.insert(rel.as_str().into(), id);
                data.dir_paths.push(rel.as_str().into());
                data.dir_entries.push(Vec::new());
                push_id(&mut data.child_dirs, key, id);
                id
            } else {
                let id = data.files.len() as u32;
                push_id(&mut data.child_files, key, id);
                data.add_file(&rel);
                id
            };
            data.dir_entries[parent_id as usize].push(Entry {
                name: name.into(),
                mask: crate::paths::text::char_mask(&lower),
                lower,
                is_dir: kind.is_dir(),
                id,
            });
        }
        data
    }

    fn add_file(&mut self, rel: &str) {
        let id = self.files.len() as u32;
        let lower = rel.to_lowercase();
        let (parent, name) = split_last(&lower);
        if let Some(ext) = extension(name) {
            self.exts.insert(ext.into());
        }
        self.by_name.entry(name.into()).or_default().push(id);
        // Proper suffixes of two or more components: start after each '/' but the last.
        if !parent.is_empty() {
            let cuts: Vec<usize> = lower.match_indices('/').map(|(i, _)| i).collect();
            for &cut in &cuts[..cuts.len() - 1] {
                let key = self.suffix_key(&lower[cut + 1..]);
                push_id(&mut self.by_suffix, key, id);
            }
        }
        self.lower
            .entry(lower.as_str().into())
            .or_default()
            .push(id);
        self.lower_files.push(lower.into());
        self.files.push(rel.into());
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn file(&self, id: u32) -> &str {
        self.files.get(id as usize).map_or("", |f| f)
    }

    /// The lowercased path of file `id`.
    pub fn lower_file(&self, id: u32) -> &str {
        self.lower_files.get(id as usize).map_or("", |f| f)
    }

    /// Files whose lowercased path is `lower`.
    pub fn by_lower(&self, lower: &str) -> &[u32] {
        self.lower.get(lower).map_or(&[], Vec::as_slice)
    }

    /// Files whose lowercased name is `lower_name`.
    pub fn by_name(&self, lower_name: &str) -> &[u32] {
        self.by_name.get(lower_name).map_or(&[], Vec::as_slice)
    }

    fn suffix_key(&self, lower_suffix: &str) -> u64 {
        use std::hash::BuildHasher;
        // A different start than the maps' own hashing of these keys.
        let mut hasher = FnvBuild::default().build_hasher();
        std::hash::Hasher::write_u8(&mut hasher, 0x5f);
        std::hash::Hasher::write(&mut hasher, lower_suffix.as_bytes());
        std::hash::Hasher::finish(&hasher)
    }

    /// Files whose lowercased path ends with `/lower_suffix` (two or more components), by
    /// hash: check each against the suffix before trusting it.
    pub fn by_suffix(&self, lower_suffix: &str) -> &[u32] {
        ids(self.by_suffix.get(&self.suffix_key(lower_suffix)))
    }

    /// The id of directory `dir` (relative, `""` for the root).
    pub fn dir_id(&self, dir: &str) -> Option<u32> {
        self.dirs.get(dir).copied()
    }

    /// The path of directory `id`.
    pub fn dir_path(&self, id: u32) -> &str {
        self.dir_paths.get(id as usize).map_or("", |p| p)
    }

    /// The entries of directory `id`.
    pub fn entries(&self, id: u32) -> &[Entry] {
        self.dir_entries.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The subdirectories of `dir` whose lowercased name hashes to `name` ([`name_hash`]).
    pub fn child_dirs(&self, dir: u32, name: u64) -> &[u32] {
        ids(self.child_dirs.get(&(dir, name)))
    }

    /// The files in `dir` whose lowercased name hashes to `name` ([`name_hash`]).
    pub fn child_files(&self, dir: u32, name: u64) -> &[u32] {
        ids(self.child_files.get(&(dir, name)))
    }

    /// The key of directory `id`'s lowercased path (extend it with [`dir_key_child`]).
    pub fn dir_key(&self, id: u32) -> u64 {
        self.dir_keys.get(id as usize).copied().unwrap_or(0)
    }

    /// The directories whose lowercased path has this key: check each before trusting it.
    pub fn dirs_by_key(&self, key: u64) -> &[u32] {
        ids(self.lower_dirs.get(&key))
    }

    pub fn has_dir(&self, dir: &str) -> bool {
        self.dirs.contains_key(dir)
    }

    /// Whether some file has this (lowercased) extension.
    pub fn has_ext(&self, lower_ext: &str) -> bool {
        self.exts.contains(lower_ext)
    }
}

/// A relative path as `/`-separated text (None when not valid UTF-8).
fn rel_text(rel: &Path) -> Option<String> {
    let mut out = String::new();
    for part in rel.components() {
        let part = part.as_os_str().to_str()?;
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(part);
    }
    Some(out)
}

/// (`dir`, `name`) of a relative path (`dir` is `""` at the top).
pub fn split_last(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// The extension of a file name (after the last dot, not for dotfiles without one).
pub fn extension(name: &str) -> Option<&str> {
    let dot = name.rfind('.')?;
    if dot == 0 || dot + 1 == name.len() {
        return None;
    }
    Some(&name[dot + 1..])
}

/// One root: its canonical path, its current index, and the watcher keeping it fresh.
pub struct RootIndex {
    /// The root as the rule wrote it (for messages).
    pub written: String,
    /// The canonical root.
    pub root: PathBuf,
    data: Arc<ArcSwap<IndexData>>,
    /// Dropping it stops the watcher and, with it, the rebuild thread.
    _watcher: Option<Arc<std::sync::Mutex<RecommendedWatcher>>>,
    /// Why the index is incomplete (file limit, no watcher), for health.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for RootIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootIndex")
            .field("root", &self.root)
            .field("files", &self.data.load().len())
            .finish()
    }
}

/// The indexes alive in this process, by canonical root and file limit: a rule reload (any
/// rule file saved) reuses them instead of walking and watching the tree again.
static SHARED: std::sync::Mutex<Vec<SharedIndex>> = std::sync::Mutex::new(Vec::new());

/// (canonical root, file limit) and the index, while something holds it.
type SharedIndex = ((PathBuf, usize), std::sync::Weak<RootIndex>);

impl RootIndex {
    /// The index of `root`: the one already alive for it, or a new one ([`RootIndex::open`]).
    pub fn shared(written: &str, root: &Path, limit: usize) -> Result<Arc<RootIndex>, String> {
        let canonical = root
            .canonicalize()
            .map_err(|e| format!("root {written:?} ({}): {e}", root.display()))?;
        let key = (canonical, limit);
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|(_, index)| index.strong_count() > 0);
        if let Some(index) = shared
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, index)| index.upgrade())
        {
            return Ok(index);
        }
        let index = Arc::new(RootIndex::open(written, &key.0, limit)?);
        shared.push((key, Arc::downgrade(&index)));
        Ok(index)
    }

    /// Indexes `root` and starts watching it. A root that is missing, not a directory or
    /// unreadable is an error (the rule is refused; the last good rules stay live).
    pub fn open(written: &str, root: &Path, limit: usize) -> Result<RootIndex, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("root {written:?} ({}): {e}", root.display()))?;
        if !root.is_dir() {
            return Err(format!("root {written:?} is not a directory"));
        }
        std::fs::read_dir(&root).map_err(|e| format!("root {written:?} is not readable: {e}"))?;
        let data = IndexData::build(&root, limit);
        let mut warnings = Vec::new();
        if data.truncated {
            warnings.push(format!(
                "root {written:?} has more than {limit} files; only the first {limit} are indexed"
            ));
        }
        let data = Arc::new(ArcSwap::from_pointee(data));
        let watcher = match watch(&root, &data, limit) {
            Ok((watcher, 0)) => Some(watcher),
            Ok((watcher, failed)) => {
                warnings.push(format!(
                    "root {written:?}: {failed} directories could not be watched (inotify \
                     limit?); files created in them are found at the next change elsewhere"
                ));
                Some(watcher)
            }
            Err(e) => {
                warnings.push(format!(
                    "root {written:?} is not watched ({e}); files created later are not indexed"
                ));
                None
            }
        };
        for warning in &warnings {
            tracing::warn!("path rule: {warning}");
        }
        Ok(RootIndex {
            written: written.to_string(),
            root,
            data,
            _watcher: watcher,
            warnings,
        })
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<IndexData> {
        self.data.load_full()
    }
}

/// A watcher, shared with the rebuild thread (which adds the directories it finds).
type SharedWatcher = Arc<std::sync::Mutex<RecommendedWatcher>>;

/// Watches each directory of `data` that `old` did not have (one watch per directory the
/// walk visited: ignored trees such as `target/` or `node_modules/` cost no watch). Returns
/// how many could not be watched.
fn watch_dirs(
    watcher: &SharedWatcher,
    root: &Path,
    data: &IndexData,
    old: Option<&IndexData>,
) -> usize {
    let mut watcher = watcher.lock().unwrap_or_else(|e| e.into_inner());
    let mut failed = 0;
    for dir in data.dirs.keys() {
        if old.is_some_and(|old| old.has_dir(dir)) {
            continue;
        }
        if watcher
            .watch(&root.join(&**dir), RecursiveMode::NonRecursive)
            .is_err()
        {
            failed += 1;
        }
    }
    failed
}

/// Starts the watcher and the thread that rebuilds the index after changes.
fn watch(
    root: &Path,
    data: &Arc<ArcSwap<IndexData>>,
    limit: usize,
) -> Result<(SharedWatcher, usize), notify::Error> {
    let (tx, rx) = mpsc::channel::<()>();
    let events_root = root.to_path_buf();
    let events_data = data.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            // The watcher lost track (queue overflow): rebuild to be safe.
            let _ = tx.send(());
            return;
        };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let current = events_data.load();
        let relevant = event.paths.iter().any(|path| {
            let Ok(rel) = path.strip_prefix(&events_root) else {
                return false;
            };
            if rel.components().any(|c| c.as_os_str() == ".git") {
                return false;
            }
            let parent = rel.parent().and_then(rel_text).unwrap_or_default();
            current.has_dir(&parent)
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(root, RecursiveMode::NonRecursive)?;
    let watcher = Arc::new(std::sync::Mutex::new(watcher));
    let failed = watch_dirs(&watcher, root, &data.load(), None);
    let root = root.to_path_buf();
    let data = data.clone();
    // The thread holds the watcher weakly: dropping the index drops the watcher, whose
    // handler holds the sender, so `recv` fails and the thread ends.
    let weak = Arc::downgrade(&watcher);
    std::thread::Builder::new()
        .name("rawrxd-path-index".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Debounce: wait until the tree has been quiet for a moment (but never
                // longer than MAX_DELAY, so a file written non-stop cannot starve the index).
                let deadline = Instant::now() + MAX_DELAY;
                while Instant::now() < deadline && rx.recv_timeout(DEBOUNCE).is_ok() {}
                let fresh = Arc::new(IndexData::build(&root, limit));
                let old = data.swap(fresh.clone());
                match weak.upgrade() {
                    Some(watcher) => {
                        watch_dirs(&watcher, &root, &fresh, Some(&old));
                    }
                    None => break,
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok((watcher, failed))
}
