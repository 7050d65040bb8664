//! An in-memory file system that keeps what was written apart from what was made durable, so
//! tests can cut the power at any sync and look at what a reboot would find.
//!
//! Model: file contents become durable on `sync_data`/`sync_all` of that file; creations,
//! renames and removals become durable on `sync_dir` of the containing directory, and a
//! directory itself on `sync_dir` of its parent. After a crash only durable state remains, plus
//! optionally a prefix of the last write if it was never synced (a torn write).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{Fs, FsFile};

#[derive(Default, Clone)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct State {
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    syncs: u64,
    writes: u64,
    /// Power is lost at this sync (1-based): it fails, and so does everything after it.
    crash_at: Option<u64>,
    crashed: bool,
    /// The disk is full: every write fails with ENOSPC and changes nothing (growing a file with
    /// `set_len` still works: it only makes a sparse file).
    full: bool,
    /// The most recent write, while it is not yet durable: (inode, offset, bytes).
    pending_write: Option<(usize, u64, Vec<u8>)>,
}

#[derive(Clone, Default)]
pub(crate) struct MemFs(Arc<Mutex<State>>);

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, p.display().to_string())
}

impl State {
    fn live(&self) -> io::Result<()> {
        if self.crashed {
            Err(power_lost())
        } else {
            Ok(())
        }
    }

    /// Counts a sync and decides whether the power goes out instead.
    fn sync_point(&mut self) -> io::Result<()> {
        self.live()?;
        self.syncs += 1;
        if self.crash_at == Some(self.syncs) {
            self.crashed = true;
            return Err(power_lost());
        }
        Ok(())
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        self.dirs.contains(dir)
    }
}

impl MemFs {
    pub fn new() -> MemFs {
        let fs = MemFs::default();
        {
            let mut s = fs.lock();
            s.dirs.insert(PathBuf::from("/"));
            s.durable_dirs.insert(PathBuf::from("/"));
        }
        fs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub fn boxed(&self) -> Box<dyn Fs> {
        Box::new(self.clone())
    }

    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    pub fn crash_at(&self, sync: u64) {
        self.lock().crash_at = Some(sync);
    }

    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    pub fn pending_write_len(&self) -> usize {
        self.lock().pending_write.as_ref().map_or(0, |w| w.2.len())
    }

    /// What a reboot finds: durable state, plus the first `torn` bytes of the last unsynced
    /// write if its file survived.
    pub fn reboot(&self, torn: usize) -> MemFs {
        let s = self.lock();
        let mut inodes: Vec<Inode> = s
            .inodes
            .iter()
            .map(|i| Inode {
                data: i.durable.clone(),
                durable: i.durable.clone(),
            })
            .collect();
        if let Some((ino, off, bytes)) = &s.pending_write {
            let n = torn.min(bytes.len());
            let inode = &mut inodes[*ino];
            let end = *off as usize + n;
            if inode.data.len() < end {
                inode.data.resize(end, 0);
            }
            inode.data[*off as usize..end].copy_from_slice(&bytes[..n]);
            inode.durable = inode.data.clone();
        }
        let dir_durable = |p: &Path| p.ancestors().skip(1).all(|a| s.durable_dirs.contains(a));
        let dirs: BTreeSet<PathBuf> = s
            .durable_dirs
            .iter()
            .filter(|d| dir_durable(d))
            .cloned()
            .collect();
        let names: BTreeMap<PathBuf, usize> = s
            .durable_names
            .iter()
            .filter(|(p, _)| dir_durable(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        MemFs(Arc::new(Mutex::new(State {
            inodes,
            names: names.clone(),
            durable_names: names,
            dirs: dirs.clone(),
            durable_dirs: dirs,
            ..State::default()
        })))
    }

    /// Current (not necessarily durable) contents.
    pub fn read_file(&self, path: &Path) -> Vec<u8> {
        let s = self.lock();
        s.inodes[s.names[path]].data.clone()
    }

    /// Replaces a file's contents, durably, as if edited while the system was down.
    pub fn write_file(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.lock();
        let ino = s.names[path];
        s.inodes[ino] = Inode {
            data: data.clone(),
            durable: data,
        };
    }

    /// Adds a file durably, as if placed there while the system was down.
    pub fn put_file(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.lock();
        s.inodes.push(Inode {
            data: data.clone(),
            durable: data,
        });
        let ino = s.inodes.len() - 1;
        s.names.insert(path.to_path_buf(), ino);
        s.durable_names.insert(path.to_path_buf(), ino);
    }

    /// File names in `dir`, sorted.
    pub fn names(&self, dir: &Path) -> Vec<String> {
        let mut v = self.list(dir).unwrap();
        v.sort();
        v
    }
}

impl Fs for MemFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.live()?;
        for a in dir.ancestors() {
            if a.as_os_str().is_empty() {
                continue;
            }
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        s.live()?;
        if !s.dir_exists(dir) {
            return Err(not_found(dir));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.lock();
        s.live()?;
        if !path.parent().is_some_and(|d| s.dir_exists(d)) {
            return Err(not_found(path));
        }
        let ino = match s.names.get(path) {
            Some(&ino) => {
                s.inodes[ino].data.clear();
                ino
            }
            None => {
                s.inodes.push(Inode::default());
                let ino = s.inodes.len() - 1;
                s.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        Ok(Box::new(MemFile {
            fs: self.clone(),
            ino,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let s = self.lock();
        s.live()?;
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(MemFile {
            fs: self.clone(),
            ino,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        s.live()?;
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.inodes[ino].data.clone())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.live()?;
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.live()?;
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if !s.dir_exists(dir) {
            return Err(not_found(dir));
        }
        s.sync_point()?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        s.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, usize)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        s.durable_names.extend(current);
        let subdirs: Vec<PathBuf> = s.dirs.iter().filter(|d| in_dir(d)).cloned().collect();
        s.durable_dirs.extend(subdirs);
        Ok(())
    }
}

struct MemFile {
    fs: MemFs,
    ino: usize,
}

impl MemFile {
    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.sync_point()?;
        let inode = &mut s.inodes[self.ino];
        inode.durable = inode.data.clone();
        if s.pending_write.as_ref().is_some_and(|w| w.0 == self.ino) {
            s.pending_write = None;
        }
        Ok(())
    }
}

impl FsFile for MemFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.live()?;
        if s.full {
            return Err(io::Error::from_raw_os_error(28));
        }
        let inode = &mut s.inodes[self.ino];
        let end = offset as usize + data.len();
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[offset as usize..end].copy_from_slice(data);
        s.pending_write = Some((self.ino, offset, data.to_vec()));
        s.writes += 1;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.live()?;
        s.inodes[self.ino].data.resize(len as usize, 0);
        Ok(())
    }
}
