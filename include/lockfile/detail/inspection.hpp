// Inspection: a lock file's state for anyone, without taking the lock.
// Part of lockfile.hpp, which includes the parts in order; include that.
#ifndef LOCKFILE_DETAIL_INSPECTION_HPP
#define LOCKFILE_DETAIL_INSPECTION_HPP

namespace lockfile {

// Judges the lock file exactly as a single acquire attempt would; changes
// nothing. Throws filesystem_error when the file cannot be read, and
// invalid_argument for a path that names no file ("dir/"), as PIDLock does.
inline LockStatus inspect(const std::filesystem::path& lock_file, const Options& options) {
  detail::validate_path(lock_file);
  const auto kind = detail::decide_fs_path(std::filesystem::absolute(lock_file).parent_path()).path;
  auto seen = detail::observe_settled(lock_file, kind);
  if (seen.error == std::errc::no_such_file_or_directory) return {};
  if (seen.error) throw std::filesystem::filesystem_error(seen.operation, lock_file, seen.error);
  return detail::judge(seen.bytes, seen.facts, options, nullptr, detail::self_identity()).status;
}

// Which removal path a lock file takes (README, "Network file systems").
// local: its directory is on a file system known to be local (ext2/3/4, xfs,
// btrfs, tmpfs, ramfs, overlayfs, f2fs, zfs, bcachefs), where flock and stat
// are one kernel's. network: anything else (NFS, SMB/CIFS, FUSE, 9p, Ceph,
// GFS2, OCFS2, Lustre, GPFS, unknown types, and every system but Linux),
// where removal goes through claim files and identity is decided by bytes
// read fresh. A directory that does not exist yet is decided by its nearest
// existing ancestor.
enum class FileSystemKind { local, network };

inline FileSystemKind file_system_kind(const std::filesystem::path& lock_file) {
  const auto decision = detail::decide_fs_path(std::filesystem::absolute(lock_file).parent_path());
  return decision.path == detail::fs_path::local ? FileSystemKind::local : FileSystemKind::network;
}

}  // namespace lockfile

#endif  // LOCKFILE_DETAIL_INSPECTION_HPP
