//! A SQLite VFS for tests that simulates the disk under a power cut and
//! injects I/O errors on demand. Test code only: the server opens it by
//! name (`Config::sqlite_vfs`), never by default.
//!
//! It wraps SQLite's default VFS (`unix`). The database file and its WAL are
//! *imaged*: what the process reads and writes is an in-memory copy of the
//! file, and the real file on disk holds only what was fsynced (`xSync`
//! writes the file's dirty blocks through). Everything else (locks, the WAL
//! index in `-shm`, temporary files) goes to the real VFS unchanged.
//!
//! - [`TestVfs::power_cut`] discards every write not yet fsynced, of every
//!   imaged file, and makes every later read or write fail: the real files
//!   are then exactly what a disk would hold after a power cut that kept
//!   nothing unsynced (no torn or reordered writes; file creation and
//!   deletion count as durable at once).
//! - [`TestVfs::cut_power_after`] does the same at the n-th write or sync
//!   from now (a random moment during write load) and then calls a hook,
//!   typically to end the process.
//! - [`TestVfs::fail_one_wal_write_after`] makes one write to a WAL file fail
//!   with `SQLITE_IOERR_WRITE` after n more successful ones: a transient disk
//!   error under the writer (checkpoints, which write the database file, do
//!   not count).
//!
//! The io-methods version is 2 (no `xFetch`), so SQLite never memory-maps
//! the real file behind the image's back. Real fsyncs are skipped: the
//! image decides what counts as synced.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::ffi;

const BLOCK: u64 = 4096;

/// A registered test VFS. Registration lasts for the process.
pub struct TestVfs {
    name: CString,
    /// The wrapped default VFS.
    real: *mut ffi::sqlite3_vfs,
    /// Open images by path, shared by every handle on the same file.
    images: Mutex<HashMap<String, Arc<Mutex<Image>>>>,
    dead: AtomicBool,
    /// Writes and syncs left before the power cut (-1: none planned).
    cut_countdown: AtomicI64,
    after_cut: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Successful WAL writes left before one fails (-1: none planned).
    fail_countdown: AtomicI64,
}

// The raw pointer is SQLite's static default VFS, safe to share.
unsafe impl Send for TestVfs {}
unsafe impl Sync for TestVfs {}

/// One imaged file: what the process sees, and which blocks differ from disk.
struct Image {
    data: Vec<u8>,
    dirty: BTreeSet<u64>,
    /// Whether the file was truncated since the last sync.
    truncated: bool,
}

/// The `sqlite3_file` SQLite allocates for us: our header, then the real
/// VFS's file (`szOsFile` is the sum).
#[repr(C)]
struct TestFile {
    base: ffi::sqlite3_file,
    vfs: *const TestVfs,
    /// `None` for files that pass through (temporary files, `-shm`).
    image: *const Mutex<Image>,
    wal: bool,
    real: *mut ffi::sqlite3_file,
}

impl TestVfs {
    /// Registers a new test VFS named `<prefix>-<n>` (unique in the process)
    /// wrapping the default VFS, and returns it.
    pub fn register(prefix: &str) -> &'static TestVfs {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        unsafe {
            let real = ffi::sqlite3_vfs_find(std::ptr::null());
            assert!(!real.is_null(), "SQLite has a default VFS");
            let vfs: &'static TestVfs = Box::leak(Box::new(TestVfs {
                name: CString::new(name).unwrap(),
                real,
                images: Mutex::new(HashMap::new()),
                dead: AtomicBool::new(false),
                cut_countdown: AtomicI64::new(-1),
                after_cut: OnceLock::new(),
                fail_countdown: AtomicI64::new(-1),
            }));
            let mut methods: ffi::sqlite3_vfs = *real;
            methods.iVersion = (*real).iVersion.min(3);
            methods.szOsFile = (std::mem::size_of::<TestFile>() as c_int) + (*real).szOsFile;
            methods.pNext = std::ptr::null_mut();
            methods.zName = vfs.name.as_ptr();
            methods.pAppData = vfs as *const TestVfs as *mut c_void;
            methods.xOpen = Some(x_open);
            methods.xDelete = Some(x_delete);
            let methods = Box::leak(Box::new(methods));
            let rc = ffi::sqlite3_vfs_register(methods, 0);
            assert_eq!(rc, ffi::SQLITE_OK, "registering the test VFS");
            vfs
        }
    }

    /// The name to open connections with.
    pub fn name(&self) -> &str {
        self.name.to_str().expect("ASCII name")
    }

    /// Discards every write not yet fsynced; every later read, write or sync
    /// of an imaged file fails.
    pub fn power_cut(&self) {
        self.dead.store(true, Ordering::SeqCst);
        let images = std::mem::take(&mut *self.images.lock().unwrap());
        for image in images.values() {
            let mut image = image.lock().unwrap();
            image.data.clear();
            image.dirty.clear();
        }
    }

    /// Cuts the power at the `ops`-th write or sync of an imaged file from
    /// now, then calls `after` (on the thread that made that call).
    pub fn cut_power_after(&self, ops: u64, after: impl Fn() + Send + Sync + 'static) {
        let _ = self.after_cut.set(Box::new(after));
        self.cut_countdown.store(ops as i64, Ordering::SeqCst);
    }

    /// Lets `writes` more WAL writes succeed, then fails the next one.
    pub fn fail_one_wal_write_after(&self, writes: u64) {
        self.fail_countdown.store(writes as i64, Ordering::SeqCst);
    }

    /// Whether the planned failing WAL write happened.
    pub fn failed_a_write(&self) -> bool {
        self.fail_countdown.load(Ordering::SeqCst) == -2
    }

    /// Counts one write or sync toward a planned power cut; true when the
    /// power is (now) off.
    fn tick_power(&self) -> bool {
        if self.dead.load(Ordering::SeqCst) {
            return true;
        }
        let left = self.cut_countdown.load(Ordering::SeqCst);
        if left < 0 {
            return false;
        }
        if self.cut_countdown.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.power_cut();
            if let Some(after) = self.after_cut.get() {
                after();
            }
            return true;
        }
        false
    }

    /// Whether this WAL write is the one planned to fail.
    fn wal_write_fails(&self) -> bool {
        let mut left = self.fail_countdown.load(Ordering::SeqCst);
        loop {
            if left < 0 {
                return false;
            }
            // -2 marks "failed once, done".
            let next = if left == 0 { -2 } else { left - 1 };
            match self.fail_countdown.compare_exchange(
                left,
                next,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return left == 0,
                Err(actual) => left = actual,
            }
        }
    }
}

unsafe fn test_vfs<'a>(vfs: *mut ffi::sqlite3_vfs) -> &'a TestVfs {
    &*((*vfs).pAppData as *const TestVfs)
}

unsafe fn path_key(name: *const c_char) -> Option<String> {
    (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let this = test_vfs(vfs);
    let test_file = file as *mut TestFile;
    let real = (file as *mut u8).add(std::mem::size_of::<TestFile>()) as *mut ffi::sqlite3_file;
    (*test_file).base.pMethods = std::ptr::null();
    let rc = ((*this.real).xOpen.unwrap())(this.real, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let imaged = flags & (ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_WAL) != 0;
    let image = match path_key(name) {
        Some(key) if imaged => {
            let mut images = this.images.lock().unwrap();
            let image = match images.get(&key) {
                Some(image) => image.clone(),
                None => {
                    let data = std::fs::read(&key).unwrap_or_default();
                    let image = Arc::new(Mutex::new(Image {
                        data,
                        dirty: BTreeSet::new(),
                        truncated: false,
                    }));
                    images.insert(key, image.clone());
                    image
                }
            };
            Arc::into_raw(image)
        }
        _ => std::ptr::null(),
    };
    test_file.write(TestFile {
        base: ffi::sqlite3_file {
            pMethods: &IO_METHODS,
        },
        vfs: this,
        image,
        wal: flags & ffi::SQLITE_OPEN_WAL != 0,
        real,
    });
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let this = test_vfs(vfs);
    if let Some(key) = path_key(name) {
        this.images.lock().unwrap().remove(&key);
    }
    ((*this.real).xDelete.unwrap())(this.real, name, sync_dir)
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    &'a TestVfs,
    Option<&'a Mutex<Image>>,
    *mut ffi::sqlite3_file,
) {
    let file = &*(file as *mut TestFile);
    (&*file.vfs, file.image.as_ref(), file.real)
}

unsafe fn real_methods<'a>(real: *mut ffi::sqlite3_file) -> &'a ffi::sqlite3_io_methods {
    &*(*real).pMethods
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let test_file = file as *mut TestFile;
    if !(*test_file).image.is_null() {
        drop(Arc::from_raw((*test_file).image));
        (*test_file).image = std::ptr::null();
    }
    let real = (*test_file).real;
    (real_methods(real).xClose.unwrap())(real)
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let (vfs, image, real) = parts(file);
    let Some(image) = image else {
        return (real_methods(real).xRead.unwrap())(real, buf, amount, offset);
    };
    if vfs.dead.load(Ordering::SeqCst) {
        return ffi::SQLITE_IOERR_READ;
    }
    let image = image.lock().unwrap();
    let out = std::slice::from_raw_parts_mut(buf as *mut u8, amount as usize);
    let start = (offset as usize).min(image.data.len());
    let end = (offset as usize + amount as usize).min(image.data.len());
    let available = end - start;
    out[..available].copy_from_slice(&image.data[start..end]);
    if available < out.len() {
        out[available..].fill(0);
        return ffi::SQLITE_IOERR_SHORT_READ;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let (vfs, image, real) = parts(file);
    let Some(image) = image else {
        return (real_methods(real).xWrite.unwrap())(real, buf, amount, offset);
    };
    if ((*(file as *mut TestFile)).wal && vfs.wal_write_fails()) || vfs.tick_power() {
        return ffi::SQLITE_IOERR_WRITE;
    }
    let mut image = image.lock().unwrap();
    let bytes = std::slice::from_raw_parts(buf as *const u8, amount as usize);
    let offset = offset as u64;
    let end = offset + bytes.len() as u64;
    if image.data.len() < end as usize {
        image.data.resize(end as usize, 0);
    }
    image.data[offset as usize..end as usize].copy_from_slice(bytes);
    for block in offset / BLOCK..end.div_ceil(BLOCK) {
        image.dirty.insert(block);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let (vfs, image, real) = parts(file);
    let Some(image) = image else {
        return (real_methods(real).xTruncate.unwrap())(real, size);
    };
    if vfs.dead.load(Ordering::SeqCst) {
        return ffi::SQLITE_IOERR_TRUNCATE;
    }
    let mut image = image.lock().unwrap();
    let size = size as usize;
    if size < image.data.len() {
        image.data.truncate(size);
        image.truncated = true;
    } else {
        let old = image.data.len() as u64;
        image.data.resize(size, 0);
        for block in old / BLOCK..(size as u64).div_ceil(BLOCK) {
            image.dirty.insert(block);
        }
    }
    ffi::SQLITE_OK
}

/// Writes the image's dirty blocks (and a truncation) through to the real
/// file: from now on they survive a power cut.
unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let (vfs, image, real) = parts(file);
    let Some(image) = image else {
        return (real_methods(real).xSync.unwrap())(real, flags);
    };
    if vfs.tick_power() {
        return ffi::SQLITE_IOERR_FSYNC;
    }
    let mut image = image.lock().unwrap();
    // The power may have gone while this call waited for the image.
    if vfs.dead.load(Ordering::SeqCst) {
        return ffi::SQLITE_IOERR_FSYNC;
    }
    let methods = real_methods(real);
    if image.truncated {
        let rc = (methods.xTruncate.unwrap())(real, image.data.len() as i64);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        image.truncated = false;
    }
    let len = image.data.len() as u64;
    let dirty = std::mem::take(&mut image.dirty);
    for block in dirty {
        let start = block * BLOCK;
        if start >= len {
            continue;
        }
        let end = (start + BLOCK).min(len);
        let chunk = &image.data[start as usize..end as usize];
        let rc = (methods.xWrite.unwrap())(
            real,
            chunk.as_ptr() as *const c_void,
            chunk.len() as c_int,
            start as i64,
        );
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    let (vfs, image, real) = parts(file);
    let Some(image) = image else {
        return (real_methods(real).xFileSize.unwrap())(real, size);
    };
    if vfs.dead.load(Ordering::SeqCst) {
        return ffi::SQLITE_IOERR_FSTAT;
    }
    *size = image.lock().unwrap().data.len() as i64;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xLock.unwrap())(real, level)
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xUnlock.unwrap())(real, level)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xCheckReservedLock.unwrap())(real, out)
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let (_, image, real) = parts(file);
    // Hints that would change the real file behind the image's back.
    if image.is_some()
        && matches!(
            op,
            ffi::SQLITE_FCNTL_SIZE_HINT
                | ffi::SQLITE_FCNTL_CHUNK_SIZE
                | ffi::SQLITE_FCNTL_MMAP_SIZE
        )
    {
        return ffi::SQLITE_NOTFOUND;
    }
    (real_methods(real).xFileControl.unwrap())(real, op, arg)
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xSectorSize.unwrap())(real)
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xDeviceCharacteristics.unwrap())(real)
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xShmMap.unwrap())(real, page, page_size, extend, out)
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xShmLock.unwrap())(real, offset, n, flags)
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    let (_, _, real) = parts(file);
    (real_methods(real).xShmBarrier.unwrap())(real)
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let (_, _, real) = parts(file);
    (real_methods(real).xShmUnmap.unwrap())(real, delete)
}
