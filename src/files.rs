//! Files under `data_dir`: private to pixeld's user (they hold user ids, IP
//! addresses, user agents), and, for small state files, written whole: a
//! temporary file, fsynced, renamed into place, and the directory fsynced
//! so the rename itself is durable.

use std::fs;
use std::io::Write;
use std::path::Path;

/// Creates `dir` and any missing parents, mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// `OpenOptions` whose newly created files are mode 0600.
pub fn private_options() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Replaces `path` with `bytes`, atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let mut f = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes the directory's entries (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir` if needed and proves a file can be created in it.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    create_private_dir(dir)?;
    let probe = dir.join(".pixeld-write-probe");
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

/// For the tests that keep a generated README section current: the text
/// between `<!-- MARKER -->` and `<!-- /MARKER -->` must be `generated`; with
/// `write_var` set in the environment the README is rewritten instead.
#[cfg(test)]
pub(crate) fn check_readme_section(marker: &str, generated: &str, write_var: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let (open, close) = (format!("<!-- {marker} -->"), format!("<!-- /{marker} -->"));
    let start = text.find(&open).expect("the README marks the section") + open.len();
    let end = text.find(&close).expect("the README marks the section");
    if std::env::var_os(write_var).is_some() {
        let text = format!("{}\n{}{}", &text[..start], generated, &text[end..]);
        std::fs::write(path, text).unwrap();
        return;
    }
    assert_eq!(
        text[start..end].trim(),
        generated.trim(),
        "README's {marker} is stale: run {write_var}=1 cargo test --lib"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        check_writable(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn what_it_creates_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        write_atomic(&sub.join("f"), b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("f")), 0o600);
    }
}
