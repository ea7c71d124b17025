//! The in-memory filesystem and its power-cut model, free of any FUSE plumbing so that it
//! can be unit-tested without a mount.
//!
//! Every regular file keeps two versions of its bytes: `cur` (what processes see, the "page
//! cache") and `durable` (what the "disk" holds). Every directory keeps two versions of its
//! entries the same way. Writes change only `cur`; `fsync` / `fsyncdir` copy `cur` into
//! `durable`; a power cut copies `durable` back into `cur`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo};

pub(crate) type Ino = u64;
pub(crate) const ROOT: Ino = 1;

/// Files are plain `Vec<u8>`s; refuse sizes that would only exhaust memory.
const MAX_FILE_SIZE: u64 = 4 << 30;
const BLOCK: u64 = 4096;
/// Reported by statfs: a generous fake capacity, so tools that check free space are happy.
const TOTAL_BLOCKS: u64 = 1 << 28; // 1 TiB
const TOTAL_INODES: u64 = 1 << 24;

/// Counters of the calls that reached the filesystem, for tests to check how (and how
/// often) the code under test asks for durability. Every request is counted, failed ones too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// FUSE `fsync` requests on files, `fsync(2)` and `fdatasync(2)` alike.
    pub fsync: u64,
    /// Those of `fsync` that had the datasync flag (`fdatasync(2)`, `File::sync_data`).
    pub fdatasync: u64,
    /// FUSE `fsyncdir` requests (`fsync(2)` on a directory).
    pub fsyncdir: u64,
    /// `write` requests.
    pub writes: u64,
    /// Bytes carried by those writes.
    pub bytes_written: u64,
    /// How many times `power_loss` ran.
    pub power_losses: u64,
}

/// What one power cut threw away; meant for test logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Files whose bytes or size differed from their durable state.
    pub files_reverted: u64,
    /// Bytes written since their file's last fsync (a size change alone counts only in
    /// `files_reverted`).
    pub bytes_dropped: u64,
    /// Directory entries added, removed or replaced since their directory's last fsyncdir.
    pub entries_dropped: u64,
    /// Files and directories no longer reachable through durable entries, now gone.
    pub inodes_dropped: u64,
    /// Open file and directory handles that now fail with EIO.
    pub handles_invalidated: u64,
}

impl fmt::Display for PowerLossReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "power loss: {} files reverted, {} unsynced bytes dropped, {} directory entries dropped, \
             {} inodes dropped, {} handles invalidated",
            self.files_reverted,
            self.bytes_dropped,
            self.entries_dropped,
            self.inodes_dropped,
            self.handles_invalidated
        )
    }
}

/// Disjoint, non-touching half-open byte ranges `[start, end)`: the parts of a file written
/// since its last fsync. Sequential appends (sled's log) keep merging into one range, so an
/// insert is O(log n) and an fsync copies only what changed.
#[derive(Debug, Default)]
pub(crate) struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub(crate) fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A range starting at or before `start` that reaches it absorbs the new one.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Ranges starting inside the new one are absorbed by it.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Forgets everything at or past `len` (the file was truncated there).
    pub(crate) fn truncate(&mut self, len: u64) {
        self.map.split_off(&len);
        if let Some((_, e)) = self.map.iter_mut().next_back() {
            *e = (*e).min(len);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    pub(crate) fn total(&self) -> u64 {
        self.iter().map(|(s, e)| e - s).sum()
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

#[derive(Debug, Default)]
pub(crate) struct FileBody {
    cur: Vec<u8>,
    durable: Vec<u8>,
    /// Ranges written since the last fsync.
    dirty: RangeSet,
    /// The smallest length `cur` had since the last fsync. Every byte at or past it was
    /// truncated away (or never existed), so it is zero in `cur` unless `dirty` covers it;
    /// this is what lets fsync skip comparing whole files.
    min_len: u64,
}

impl FileBody {
    fn len(&self) -> u64 {
        self.cur.len() as u64
    }

    fn set_len(&mut self, len: u64) -> Result<(), Errno> {
        if len > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        if len < self.len() {
            self.min_len = self.min_len.min(len);
            self.dirty.truncate(len);
        }
        self.cur.resize(len as usize, 0);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or(Errno::EFBIG)?;
        if end > self.len() {
            self.cur.resize(end as usize, 0);
        }
        self.cur[offset as usize..end as usize].copy_from_slice(data);
        self.dirty.insert(offset, end);
        Ok(())
    }

    fn changed(&self) -> bool {
        self.dirty.total() > 0 || self.min_len != self.len() || self.cur.len() != self.durable.len()
    }

    /// fsync: make `durable` equal `cur`, at a cost proportional to what changed.
    fn sync(&mut self) {
        let len = self.cur.len();
        // Bytes below `min_len` only changed where `dirty` says; bytes past it are zero
        // unless `dirty` says otherwise (see `min_len`).
        let keep = (self.min_len as usize).min(self.durable.len());
        self.durable.truncate(keep);
        self.durable.resize(len, 0);
        for (s, e) in self.dirty.iter() {
            let (s, e) = (s as usize, (e as usize).min(len));
            if s < e {
                self.durable[s..e].copy_from_slice(&self.cur[s..e]);
            }
        }
        self.dirty.clear();
        self.min_len = len as u64;
    }

    /// Power cut: back to the durable bytes. Returns the dropped byte count when changed.
    fn revert(&mut self) -> Option<u64> {
        if !self.changed() {
            return None;
        }
        let dropped = self.dirty.total();
        self.cur.clone_from(&self.durable);
        self.dirty.clear();
        self.min_len = self.len();
        Some(dropped)
    }
}

#[derive(Debug)]
pub(crate) struct DirBody {
    cur: BTreeMap<OsString, Ino>,
    durable: BTreeMap<OsString, Ino>,
    /// For "..": the directory that currently holds this one.
    parent: Ino,
}

#[derive(Debug)]
pub(crate) enum Body {
    File(FileBody),
    Dir(DirBody),
}

/// Metadata is not crash-modelled: mode, owner and times survive a power cut as they are.
#[derive(Debug)]
pub(crate) struct Inode {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Entries naming this inode in the current namespace.
    cur_links: u32,
    /// Entries naming it in the durable namespace: while any exist, a power cut may bring
    /// the inode back, so it must be kept even when unlinked.
    durable_links: u32,
    /// Open handles of the current generation.
    open: u32,
}

impl Inode {
    fn new(body: Body, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = SystemTime::now();
        Inode {
            body,
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            cur_links: 0,
            durable_links: 0,
            open: 0,
        }
    }

    fn kind(&self) -> FileType {
        match self.body {
            Body::File(_) => FileType::RegularFile,
            Body::Dir(_) => FileType::Directory,
        }
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

#[derive(Debug)]
struct Handle {
    ino: Ino,
    /// The power-cut generation the handle was opened in; older ones get EIO.
    generation: u64,
    /// Directory handles: the listing taken when reading starts at offset 0, so that
    /// entries removed while a reader walks the directory (sled deletes blobs that way)
    /// neither shift nor skip the others.
    listing: Option<Vec<(OsString, Ino, FileType)>>,
}

/// Attribute changes asked for by `setattr`.
#[derive(Debug, Default)]
pub(crate) struct SetAttr {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<SystemTime>,
    pub(crate) mtime: Option<SystemTime>,
}

#[derive(Debug)]
pub(crate) struct State {
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    generation: u64,
    pub(crate) stats: Stats,
}

impl State {
    pub(crate) fn new(uid: u32, gid: u32) -> State {
        let root = DirBody {
            cur: BTreeMap::new(),
            durable: BTreeMap::new(),
            parent: ROOT,
        };
        let mut root = Inode::new(Body::Dir(root), 0o755, uid, gid);
        // The root is always there, like a formatted disk's.
        root.cur_links = 1;
        root.durable_links = 1;
        State {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            generation: 0,
            stats: Stats::default(),
        }
    }

    fn inode(&self, ino: Ino) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: Ino) -> Result<&DirBody, Errno> {
        match &self.inode(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut DirBody, Errno> {
        match &mut self.inode_mut(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut FileBody, Errno> {
        match &mut self.inode_mut(ino)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// The inode behind a handle, or EIO when the handle predates the last power cut.
    fn live(&self, fh: u64) -> Result<Ino, Errno> {
        let h = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        if h.generation != self.generation {
            return Err(Errno::EIO);
        }
        Ok(h.ino)
    }

    pub(crate) fn attr(&self, ino: Ino) -> Result<FileAttr, Errno> {
        let i = self.inode(ino)?;
        let (size, nlink) = match &i.body {
            Body::File(f) => (f.len(), i.cur_links),
            Body::Dir(_) => (BLOCK, 2),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.ctime,
            kind: i.kind(),
            perm: i.perm,
            nlink,
            uid: i.uid,
            gid: i.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        })
    }

    pub(crate) fn lookup(&self, parent: Ino, name: &OsStr) -> Result<FileAttr, Errno> {
        let ino = *self.dir(parent)?.cur.get(name).ok_or(Errno::ENOENT)?;
        self.attr(ino)
    }

    pub(crate) fn getattr(&self, ino: Ino, fh: Option<u64>) -> Result<FileAttr, Errno> {
        if let Some(fh) = fh {
            self.live(fh)?;
        }
        self.attr(ino)
    }

    pub(crate) fn setattr(
        &mut self,
        ino: Ino,
        fh: Option<u64>,
        set: SetAttr,
    ) -> Result<FileAttr, Errno> {
        if let Some(fh) = fh {
            self.live(fh)?;
        }
        if let Some(size) = set.size {
            self.file_mut(ino)?.set_len(size)?;
        }
        let i = self.inode_mut(ino)?;
        if let Some(mode) = set.mode {
            i.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = set.uid {
            i.uid = uid;
        }
        if let Some(gid) = set.gid {
            i.gid = gid;
        }
        if let Some(t) = set.atime {
            i.atime = t;
        }
        if let Some(t) = set.mtime {
            i.mtime = t;
        }
        i.ctime = SystemTime::now();
        if set.size.is_some() && set.mtime.is_none() {
            i.mtime = i.ctime;
        }
        self.attr(ino)
    }

    /// Adds a new file or directory under `parent` (current namespace only).
    pub(crate) fn make(
        &mut self,
        parent: Ino,
        name: &OsStr,
        dir: bool,
        perm: u16,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.cur.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let body = if dir {
            Body::Dir(DirBody {
                cur: BTreeMap::new(),
                durable: BTreeMap::new(),
                parent,
            })
        } else {
            Body::File(FileBody::default())
        };
        let ino = self.next_ino;
        self.next_ino += 1; // never reused, so the kernel can't confuse old and new inodes
        let mut inode = Inode::new(body, perm, uid, gid);
        inode.cur_links = 1;
        self.inodes.insert(ino, inode);
        self.dir_mut(parent)?.cur.insert(name.to_owned(), ino);
        self.inode_mut(parent)?.touch();
        self.attr(ino)
    }

    pub(crate) fn unlink(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.cur.get(name).ok_or(Errno::ENOENT)?;
        if let Body::Dir(_) = self.inode(ino)?.body {
            return Err(Errno::EISDIR);
        }
        self.remove_entry(parent, name, ino)
    }

    pub(crate) fn rmdir(&mut self, parent: Ino, name: &OsStr) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.cur.get(name).ok_or(Errno::ENOENT)?;
        if !self.dir(ino)?.cur.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.remove_entry(parent, name, ino)
    }

    fn remove_entry(&mut self, parent: Ino, name: &OsStr, ino: Ino) -> Result<(), Errno> {
        self.dir_mut(parent)?.cur.remove(name);
        self.inode_mut(parent)?.touch();
        let i = self.inode_mut(ino)?;
        i.cur_links -= 1;
        i.ctime = SystemTime::now();
        self.maybe_free(ino);
        Ok(())
    }

    pub(crate) fn rename(
        &mut self,
        parent: Ino,
        name: &OsStr,
        new_parent: Ino,
        new_name: &OsStr,
        noreplace: bool,
    ) -> Result<(), Errno> {
        let src = *self.dir(parent)?.cur.get(name).ok_or(Errno::ENOENT)?;
        let src_is_dir = matches!(self.inode(src)?.body, Body::Dir(_));
        let replaced = self.dir(new_parent)?.cur.get(new_name).copied();
        if let Some(dst) = replaced {
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if dst == src {
                return Ok(()); // POSIX: renaming a file onto itself does nothing
            }
            match (src_is_dir, &self.inode(dst)?.body) {
                (true, Body::File(_)) => return Err(Errno::ENOTDIR),
                (false, Body::Dir(_)) => return Err(Errno::EISDIR),
                (true, Body::Dir(d)) if !d.cur.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        // (The kernel already refused moving a directory into its own subtree.)
        self.dir_mut(parent)?.cur.remove(name);
        self.dir_mut(new_parent)?
            .cur
            .insert(new_name.to_owned(), src);
        if src_is_dir {
            self.dir_mut(src)?.parent = new_parent;
        }
        self.inode_mut(parent)?.touch();
        self.inode_mut(new_parent)?.touch();
        self.inode_mut(src)?.ctime = SystemTime::now();
        if let Some(dst) = replaced {
            self.inode_mut(dst)?.cur_links -= 1;
            self.maybe_free(dst);
        }
        Ok(())
    }

    /// Drops an inode nothing can reach any more: no current entry, no durable entry (so no
    /// power cut can resurrect it) and no open handle. Directories are kept while they still
    /// hold durable entries, to keep the children's `durable_links` honest; the next power
    /// cut collects them.
    fn maybe_free(&mut self, ino: Ino) {
        let Some(i) = self.inodes.get(&ino) else {
            return;
        };
        let unused = i.cur_links == 0 && i.durable_links == 0 && i.open == 0;
        let holds_durable = matches!(&i.body, Body::Dir(d) if !d.durable.is_empty());
        if unused && !holds_durable && ino != ROOT {
            self.inodes.remove(&ino);
        }
    }

    fn new_handle(&mut self, ino: Ino) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                generation: self.generation,
                listing: None,
            },
        );
        if let Some(i) = self.inodes.get_mut(&ino) {
            i.open += 1;
        }
        fh
    }

    pub(crate) fn open(&mut self, ino: Ino) -> Result<u64, Errno> {
        self.file_mut(ino)?;
        Ok(self.new_handle(ino))
    }

    pub(crate) fn opendir(&mut self, ino: Ino) -> Result<u64, Errno> {
        self.dir(ino)?;
        Ok(self.new_handle(ino))
    }

    /// close(2), last reference: never fails, even for handles killed by a power cut.
    pub(crate) fn release(&mut self, fh: u64) {
        let Some(h) = self.handles.remove(&fh) else {
            return;
        };
        // Handles from before the last power cut no longer count (see `power_loss`).
        if h.generation == self.generation {
            if let Some(i) = self.inodes.get_mut(&h.ino) {
                i.open -= 1;
            }
            self.maybe_free(h.ino);
        }
    }

    /// Checks that a handle is still alive (flush, and anything else that only needs that).
    pub(crate) fn check(&self, fh: u64) -> Result<(), Errno> {
        self.live(fh).map(|_| ())
    }

    pub(crate) fn read(&mut self, fh: u64, offset: u64, size: u32) -> Result<&[u8], Errno> {
        let ino = self.live(fh)?;
        let f = self.file_mut(ino)?;
        let start = (offset.min(f.len())) as usize;
        let end = (offset.saturating_add(size as u64).min(f.len())) as usize;
        Ok(&f.cur[start..end])
    }

    pub(crate) fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
        let ino = self.live(fh)?;
        self.file_mut(ino)?.write(offset, data)?;
        self.inode_mut(ino)?.touch();
        Ok(data.len() as u32)
    }

    pub(crate) fn fallocate(
        &mut self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let ino = self.live(fh)?;
        let f = self.file_mut(ino)?;
        match mode {
            // Plain allocation: the file grows to cover the range (new bytes read as zeros).
            0 => {
                let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
                if end > f.len() {
                    f.set_len(end)?;
                }
                Ok(())
            }
            // Reserve space only: nothing visible changes, and we have no space to reserve.
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }

    /// fsync and fdatasync alike: the file's bytes and size become durable.
    pub(crate) fn fsync(&mut self, fh: u64, datasync: bool) -> Result<(), Errno> {
        self.stats.fsync += 1;
        if datasync {
            self.stats.fdatasync += 1;
        }
        let ino = self.live(fh)?;
        self.file_mut(ino)?.sync();
        Ok(())
    }

    /// fsync of a directory: its current entries become its durable entries.
    pub(crate) fn fsyncdir(&mut self, fh: u64) -> Result<(), Errno> {
        self.stats.fsyncdir += 1;
        let ino = self.live(fh)?;
        let d = self.dir_mut(ino)?;
        if d.cur == d.durable {
            return Ok(());
        }
        let old = std::mem::replace(&mut d.durable, d.cur.clone());
        let new = d.cur.clone();
        // Move the durable link counts from the entries that went to the ones that came.
        for (name, child) in &old {
            if new.get(name) != Some(child) {
                if let Some(i) = self.inodes.get_mut(child) {
                    i.durable_links -= 1;
                }
            }
        }
        for (name, child) in &new {
            if old.get(name) != Some(child) {
                if let Some(i) = self.inodes.get_mut(child) {
                    i.durable_links += 1;
                }
            }
        }
        for child in old.values() {
            self.maybe_free(*child);
        }
        Ok(())
    }

    /// Fills the directory listing for `readdir` at `offset` (an index into the listing,
    /// taken afresh when a reader starts at 0). `add` returns true when the reply is full.
    pub(crate) fn readdir(
        &mut self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(Ino, u64, FileType, &OsStr) -> bool,
    ) -> Result<(), Errno> {
        let ino = self.live(fh)?;
        let listing_missing = self.handles.get(&fh).is_some_and(|h| h.listing.is_none());
        if offset == 0 || listing_missing {
            let d = self.dir(ino)?;
            let mut listing = vec![
                (OsString::from("."), ino, FileType::Directory),
                (OsString::from(".."), d.parent, FileType::Directory),
            ];
            for (name, &child) in &d.cur {
                let kind = self.inode(child)?.kind();
                listing.push((name.clone(), child, kind));
            }
            self.handles.get_mut(&fh).ok_or(Errno::EBADF)?.listing = Some(listing);
        }
        let h = self.handles.get(&fh).ok_or(Errno::EBADF)?;
        let listing = h.listing.as_deref().unwrap_or_default();
        for (i, (name, child, kind)) in listing.iter().enumerate().skip(offset as usize) {
            if add(*child, i as u64 + 1, *kind, name) {
                break;
            }
        }
        Ok(())
    }

    /// (total blocks, free blocks, total inodes, free inodes) for statfs.
    pub(crate) fn statfs(&self) -> (u64, u64, u64, u64) {
        let used: u64 = self
            .inodes
            .values()
            .map(|i| match &i.body {
                Body::File(f) => f.len().div_ceil(BLOCK),
                Body::Dir(_) => 1,
            })
            .sum();
        let files = self.inodes.len() as u64;
        (
            TOTAL_BLOCKS,
            TOTAL_BLOCKS.saturating_sub(used),
            TOTAL_INODES,
            TOTAL_INODES.saturating_sub(files),
        )
    }

    /// The power cut. Afterwards the filesystem looks exactly like its durable state, and
    /// every handle opened before gets EIO.
    pub(crate) fn power_loss(&mut self) -> PowerLossReport {
        let mut report = PowerLossReport::default();
        self.stats.power_losses += 1;

        // 1. Every file and directory goes back to its durable content.
        for inode in self.inodes.values_mut() {
            match &mut inode.body {
                Body::File(f) => {
                    if let Some(dropped) = f.revert() {
                        report.files_reverted += 1;
                        report.bytes_dropped += dropped;
                    }
                }
                Body::Dir(d) => {
                    let changed = d
                        .cur
                        .iter()
                        .filter(|(n, i)| d.durable.get(*n) != Some(*i))
                        .count()
                        + d.durable.keys().filter(|n| !d.cur.contains_key(*n)).count();
                    report.entries_dropped += changed as u64;
                    d.cur.clone_from(&d.durable);
                }
            }
        }

        // 2. Only what the durable namespace reaches from the root survives; link counts
        //    are recounted from it. (The strict model can in odd cases leave one directory
        //    durably named in two places; the `seen` set keeps this walk finite anyway.)
        for inode in self.inodes.values_mut() {
            inode.cur_links = 0;
            inode.durable_links = 0;
            inode.open = 0; // every old handle is dead, none pins its inode
        }
        let mut seen = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        let mut links: Vec<(Ino, Ino)> = Vec::new(); // (child, parent)
        while let Some(dir) = todo.pop() {
            let Some(Body::Dir(d)) = self.inodes.get(&dir).map(|i| &i.body) else {
                continue;
            };
            for &child in d.durable.values() {
                links.push((child, dir));
                if seen.insert(child) {
                    todo.push(child);
                }
            }
        }
        for (child, parent) in links {
            if let Some(i) = self.inodes.get_mut(&child) {
                i.cur_links += 1;
                i.durable_links += 1;
                if let Body::Dir(d) = &mut i.body {
                    if i.cur_links == 1 {
                        d.parent = parent;
                    }
                }
            }
        }
        if let Some(root) = self.inodes.get_mut(&ROOT) {
            root.cur_links += 1;
            root.durable_links += 1;
        }
        let before = self.inodes.len();
        self.inodes.retain(|ino, _| seen.contains(ino));
        report.inodes_dropped = (before - self.inodes.len()) as u64;

        // 3. A new generation: handles from the old one fail from now on.
        report.handles_invalidated = self
            .handles
            .values()
            .filter(|h| h.generation == self.generation)
            .count() as u64;
        self.generation += 1;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(r: &RangeSet) -> Vec<(u64, u64)> {
        r.iter().collect()
    }

    #[test]
    fn range_set_merges_and_truncates() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(ranges(&r), [(10, 20), (30, 40)]);
        r.insert(20, 25); // touching: merged
        assert_eq!(ranges(&r), [(10, 25), (30, 40)]);
        r.insert(5, 35); // swallows both
        assert_eq!(ranges(&r), [(5, 40)]);
        r.insert(50, 60);
        r.truncate(55);
        assert_eq!(ranges(&r), [(5, 40), (50, 55)]);
        r.truncate(40);
        assert_eq!(ranges(&r), [(5, 40)]);
        assert_eq!(r.total(), 35);
    }

    /// Checks `sync` against the obvious O(size) definition over a mix of operations.
    #[test]
    fn file_sync_matches_full_copy() {
        let mut f = FileBody::default();
        let ops: &[(&str, u64, u64)] = &[
            ("w", 0, 100),
            ("s", 0, 0),
            ("t", 30, 0),
            ("t", 80, 0),
            ("w", 70, 5),
            ("s", 0, 0),
            ("w", 200, 10),
            ("t", 150, 0),
            ("t", 50, 0),
            ("t", 300, 0),
            ("w", 40, 20),
            ("s", 0, 0),
        ];
        let mut byte = 1u8;
        for &(op, a, b) in ops {
            match op {
                "w" => {
                    f.write(a, &vec![byte; b as usize]).unwrap();
                    byte += 1;
                }
                "t" => f.set_len(a).unwrap(),
                _ => {
                    f.sync();
                    assert_eq!(f.durable, f.cur);
                    assert!(!f.changed());
                }
            }
        }
    }

    #[test]
    fn revert_restores_durable_bytes() {
        let mut f = FileBody::default();
        f.write(0, b"hello").unwrap();
        f.sync();
        f.write(3, b"p!").unwrap();
        f.set_len(2).unwrap();
        f.set_len(10).unwrap();
        assert_eq!(f.revert(), Some(0)); // the dirty range was truncated away
        assert_eq!(f.cur, b"hello");
        assert_eq!(f.revert(), None);
    }

    #[test]
    fn namespace_durability_and_gc() {
        let mut s = State::new(0, 0);
        let a = s.make(ROOT, OsStr::new("a"), false, 0o644, 0, 0).unwrap();
        let fh = s.open(a.ino.0).unwrap();
        s.write(fh, 0, b"x").unwrap();
        s.fsync(fh, false).unwrap();
        let report = s.power_loss();
        assert_eq!(report.inodes_dropped, 1);
        assert_eq!(report.entries_dropped, 1);
        assert_eq!(s.check(fh), Err(Errno::EIO));
        assert_eq!(s.lookup(ROOT, OsStr::new("a")), Err(Errno::ENOENT));
        s.release(fh);

        let a = s.make(ROOT, OsStr::new("a"), false, 0o644, 0, 0).unwrap();
        let root = s.opendir(ROOT).unwrap();
        s.fsyncdir(root).unwrap();
        s.unlink(ROOT, OsStr::new("a")).unwrap();
        // Unlinked but durably named: kept, and back after a power cut.
        assert!(s.inodes.contains_key(&a.ino.0));
        s.power_loss();
        assert_eq!(s.lookup(ROOT, OsStr::new("a")).unwrap().ino, a.ino);
        let root = s.opendir(ROOT).unwrap();
        s.unlink(ROOT, OsStr::new("a")).unwrap();
        s.fsyncdir(root).unwrap();
        assert!(!s.inodes.contains_key(&a.ino.0));
    }
}
