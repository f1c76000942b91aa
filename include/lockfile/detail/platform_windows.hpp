// The Windows platform: every Win32 call the library makes lives here, on
// wide paths (CreateFileW on path::native(), never the ANSI API). Functions
// report GetLastError() through std::error_code and never throw.
// Included by platform.hpp, which declares the interface; include lockfile.hpp.
#ifndef LOCKFILE_DETAIL_PLATFORM_WINDOWS_HPP
#define LOCKFILE_DETAIL_PLATFORM_WINDOWS_HPP

// How each POSIX mechanism is played here (docs/design.md "Windows"):
//
//   publish by link()      a private ".<name>.<owner>.tmp" file, written,
//       then renamed onto the lock path through its handle without
//       replacement (FileRenameInfo, ReplaceIfExists off): "exists" = held.
//   flock as the removal guard  LockFileEx on one byte far past any record
//       (exclusive, fail at once); released by the kernel when the holder's
//       handle closes or its process dies.
//   unlink under the guard  through a handle: renamed aside to a private
//       name first, so that the lock's name is free at once even while a
//       reader still has the file open, then deleted on close.
//   O_NOFOLLOW             FILE_FLAG_OPEN_REPARSE_POINT: a symbolic link or
//       junction at the path is opened as itself, and refused.
//   /proc probes           OpenProcess: "no such process", a signalled
//       process object, or a different creation time (a reused pid) prove
//       an owner dead. The boot time is the boot id.
//   inotify, pidfd         ReadDirectoryChangesW on the directory (waking only
//       when the lock's own name leaves it), and the holder's process
//       handle, in WaitForMultipleObjects.
//   fork                   none: the fork handling compiles to nothing.
//   file modes             ignored: a new file inherits its directory's ACL.

#if defined(min) || defined(max)
#error "lockfile: <windows.h> was included without NOMINMAX; its min and max macros break std::min and std::max. Define NOMINMAX before including <windows.h>."
#endif
#pragma push_macro("NOMINMAX")
#undef NOMINMAX
#define NOMINMAX
#include <windows.h>
#pragma pop_macro("NOMINMAX")

namespace lockfile::detail {

inline constexpr bool linux_extras = false;

// Library-made codes (ELOOP, EISDIR, EINVAL): the generic category, as
// std::filesystem reports them.
inline std::error_code errno_code(int value) { return {value, std::generic_category()}; }

// GetLastError() as an error_code; std::system_category() maps the common
// values (ERROR_FILE_NOT_FOUND, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS)
// to their std::errc conditions. Except a name Windows cannot spell
// (ERROR_INVALID_NAME, ERROR_BAD_PATHNAME: "a<b.lock"), which libstdc++
// maps to "no such file": the library would take it for a lock file that
// vanished, and inspect() would call the lock free. It is EINVAL.
inline std::error_code win_code(DWORD value = ::GetLastError()) {
  if (value == ERROR_INVALID_NAME || value == ERROR_BAD_PATHNAME) return errno_code(EINVAL);
  return {static_cast<int>(value), std::system_category()};
}

// A function of ntdll that kernel32 does not export; null when missing.
template <class Function>
Function ntdll_function(const char* name) noexcept {
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  if (!ntdll) return nullptr;
  // Through void(*)(): the one cast between function types that is defined.
  return reinterpret_cast<Function>(  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
      reinterpret_cast<void (*)()>(::GetProcAddress(ntdll, name)));  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
}

// Whether the last failure was a name whose file is being deleted (someone
// deleted it while another program still has it open): Win32 reports that
// as "access denied", but for the protocol the file is gone.
// (The function is looked up when the program starts: looked up on first
// use, the lookup itself could overwrite the status it is asked for.)
inline const auto rtl_get_last_nt_status = ntdll_function<LONG(WINAPI*)()>("RtlGetLastNtStatus");
inline bool last_error_was_delete_pending() {
  constexpr LONG status_delete_pending = static_cast<LONG>(0xC0000056L);
  if (::GetLastError() != ERROR_ACCESS_DENIED) return false;
  return rtl_get_last_nt_status != nullptr && rtl_get_last_nt_status() == status_delete_pending;
}

// The removal of a file failed only because a program has it open without
// sharing delete access (or has a byte range of it locked): it will let go,
// so the removal is retried like one a busy guard refused.
inline bool removal_in_use(const std::error_code& ec) {
  return ec.category() == std::system_category() &&
         (ec.value() == ERROR_SHARING_VIOLATION || ec.value() == ERROR_LOCK_VIOLATION);
}
inline constexpr const char* removal_in_use_hint =
    "another process kept checking it, or a program kept it open without sharing delete access";

// The name every call is given: the path as it is, or, when it is too long
// for the classic limit (MAX_PATH, less room for a file name in a
// directory), made absolute and normalised by GetFullPathNameW and given
// the "\\?\" prefix, which lifts the limit but also turns off all
// normalisation. Long paths then work without the process opting in
// (longPathAware in its manifest, and the LongPathsEnabled policy).
inline std::wstring win32_path(const std::filesystem::path& path) {
  const std::wstring& native = path.native();
  constexpr std::size_t classic_limit = MAX_PATH - 12;  // CreateDirectoryW's own limit
  // Already in a form that is not normalised ("\\?\", "\\.\" devices,
  // "\??\" NT names): as given.
  if (native.size() < classic_limit || native.starts_with(L"\\\\?\\") || native.starts_with(L"\\\\.\\") ||
      native.starts_with(L"\\??\\"))
    return native;
  const DWORD size = ::GetFullPathNameW(native.c_str(), 0, nullptr, nullptr);
  if (size == 0) return native;
  std::wstring full(size, L'\0');
  const DWORD length = ::GetFullPathNameW(native.c_str(), size, full.data(), nullptr);
  if (length == 0 || length >= size) return native;
  full.resize(length);
  // A device name at the end ("...\\NUL") comes back as "\\.\\NUL": a
  // device, which the prefix would turn into a file of that name.
  if (full.starts_with(L"\\\\.\\") || full.starts_with(L"\\\\?\\")) return full;
  if (full.starts_with(L"\\\\")) return L"\\\\?\\UNC\\" + full.substr(2);  // \\server\share\...
  return L"\\\\?\\" + full;
}

using native_handle = HANDLE;
inline const native_handle no_handle = nullptr;

// Ignored on Windows: a new file inherits its directory's ACL.
using mode_bits = unsigned;
inline mode_bits to_mode(std::filesystem::perms perms) {
  return static_cast<mode_bits>(perms & std::filesystem::perms::mask);
}

// Owns one handle (never inheritable: made without SECURITY_ATTRIBUTES);
// closes it on destruction. INVALID_HANDLE_VALUE is held as empty.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(HANDLE handle) : handle_(handle == INVALID_HANDLE_VALUE ? nullptr : handle) {}
  unique_fd(unique_fd&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.handle_, nullptr));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  HANDLE get() const { return handle_; }
  explicit operator bool() const { return handle_ != nullptr; }
  HANDLE release() noexcept { return std::exchange(handle_, nullptr); }
  void reset(HANDLE handle = nullptr) {
    if (handle_ != nullptr) ::CloseHandle(handle_);
    handle_ = handle == INVALID_HANDLE_VALUE ? nullptr : handle;
  }

 private:
  HANDLE handle_ = nullptr;
};

using publication = basic_publication<unique_fd>;
using observed_file = basic_observed_file<unique_fd>;

// Every share mode: our handles never keep a reader, a writer or a remover
// (us, renaming it aside) out.
inline constexpr DWORD share_all = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

// Opens a name itself, never what a reparse point at it points to; a
// directory too (backup semantics), so that it can be told apart and
// refused rather than failing as "access denied".
inline unique_fd open_name(const std::filesystem::path& path, DWORD access, DWORD disposition = OPEN_EXISTING,
                           DWORD flags = 0) {
  return unique_fd(::CreateFileW(win32_path(path).c_str(), access, share_all, nullptr, disposition,
                                 flags | FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS, nullptr));
}

// FILETIME (100 ns since 1601) as a time_point, saturating like file times
// on POSIX.
inline std::chrono::system_clock::time_point from_filetime(std::uint64_t ticks) {
  constexpr std::int64_t unix_epoch = 116444736000000000LL;  // 1970-01-01 in FILETIME ticks
  const auto since_unix = static_cast<std::int64_t>(ticks) - unix_epoch;
  const auto seconds = since_unix / 10'000'000;
  const auto rest = since_unix % 10'000'000;
  return from_file_time(seconds, rest * 100);
}

inline std::uint64_t ticks_of(FILETIME time) {
  return (static_cast<std::uint64_t>(time.dwHighDateTime) << 32) | time.dwLowDateTime;
}

inline std::error_code stat_fd(HANDLE handle, file_facts& out) {
  out = file_facts{};
  if (::GetFileType(handle) != FILE_TYPE_DISK) return {};  // a device, a pipe, a console: not regular
  BY_HANDLE_FILE_INFORMATION info{};
  if (!::GetFileInformationByHandle(handle, &info)) return win_code();
  // The 128-bit id where the file system has one (ReFS ids do not fit the
  // 64-bit file index), the 64-bit index elsewhere: each volume always
  // answers the same way, so two identities compare like for like.
  FILE_ID_INFO id{};
  if (::GetFileInformationByHandleEx(handle, FileIdInfo, &id, sizeof id)) {
    std::uint64_t low = 0;
    std::uint64_t high = 0;
    static_assert(sizeof id.FileId.Identifier == sizeof low + sizeof high);
    std::memcpy(&low, id.FileId.Identifier, sizeof low);
    std::memcpy(&high, id.FileId.Identifier + sizeof low, sizeof high);
    out.identity = {id.VolumeSerialNumber, low, high};
  } else {
    out.identity = {info.dwVolumeSerialNumber,
                    (static_cast<std::uint64_t>(info.nFileIndexHigh) << 32) | info.nFileIndexLow, 0};
  }
  out.directory = (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0;
  // Links are the reparse points that stand for another name (symbolic
  // links, junctions: "name surrogates"); others (cloud placeholders,
  // deduplicated files) are the file itself, which a filter driver serves.
  if ((info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    FILE_ATTRIBUTE_TAG_INFO tag{};
    out.symlink = ::GetFileInformationByHandleEx(handle, FileAttributeTagInfo, &tag, sizeof tag) == 0 ||
                  IsReparseTagNameSurrogate(tag.ReparseTag);
  }
  out.regular = !out.directory && !out.symlink;
  out.links = info.nNumberOfLinks;
  out.modified = from_filetime(ticks_of(info.ftLastWriteTime));
  // ChangeTime: the file system's own clock for the last change (metadata
  // included), as close to ctime as Windows comes.
  FILE_BASIC_INFO basic{};
  if (::GetFileInformationByHandleEx(handle, FileBasicInfo, &basic, sizeof basic))
    out.changed = from_filetime(static_cast<std::uint64_t>(basic.ChangeTime.QuadPart));
  else
    out.changed = out.modified;
  return {};
}

// SMB clients answer from the server for an open handle: nothing fresher
// to ask for.
inline std::error_code stat_fd_fresh(HANDLE handle, file_facts& out) { return stat_fd(handle, out); }

// The name itself: a reparse point at the path is reported as a link.
inline std::error_code stat_path(const std::filesystem::path& path, file_facts& out) {
  const auto handle = open_name(path, FILE_READ_ATTRIBUTES);
  // Delete pending (removed while a program has it open): gone, for the
  // protocol, though Win32 says "access denied".
  if (!handle) return last_error_was_delete_pending() ? std::make_error_code(std::errc::no_such_file_or_directory)
                                                      : win_code();
  return stat_fd(handle.get(), out);
}

inline OVERLAPPED at_offset(std::uint64_t offset) {
  OVERLAPPED at{};
  // NOLINTBEGIN(cppcoreguidelines-pro-type-union-access): OVERLAPPED's offset is a Win32 union member
  at.Offset = static_cast<DWORD>(offset & 0xFFFFFFFFU);
  at.OffsetHigh = static_cast<DWORD>(offset >> 32);
  // NOLINTEND(cppcoreguidelines-pro-type-union-access)
  return at;
}

// Reads from offset 0 up to limit + 1 bytes (see the POSIX version).
inline std::error_code read_prefix(HANDLE handle, std::string& out, std::size_t limit) {
  const std::size_t cap = limit + 1;
  out.resize(std::min<std::size_t>(cap, 1024));
  std::size_t got = 0;
  for (;;) {
    const auto want = static_cast<DWORD>(out.size() - got);
    DWORD n = 0;
    auto at = at_offset(got);
    if (!::ReadFile(handle, out.data() + got, want, &n, &at)) {
      const DWORD error = ::GetLastError();
      if (error == ERROR_HANDLE_EOF) break;
      out.clear();
      return win_code(error);
    }
    got += n;
    if (n < want || got == cap) break;
    out.resize(std::min(cap, out.size() * 4));
  }
  out.resize(got);
  return {};
}

inline std::error_code write_at(HANDLE handle, std::string_view bytes, std::uint64_t offset) {
  while (!bytes.empty()) {
    DWORD n = 0;
    auto at = at_offset(offset);
    if (!::WriteFile(handle, bytes.data(), static_cast<DWORD>(bytes.size()), &n, &at)) return win_code();
    bytes.remove_prefix(n);
    offset += n;
  }
  return {};
}

inline std::error_code truncate_to(HANDLE handle, std::size_t size) {
  FILE_END_OF_FILE_INFO end{};
  end.EndOfFile.QuadPart = static_cast<LONGLONG>(size);  // NOLINT(cppcoreguidelines-pro-type-union-access): LARGE_INTEGER
  return ::SetFileInformationByHandle(handle, FileEndOfFileInfo, &end, sizeof end) ? std::error_code{}
                                                                                     : win_code();
}

// The guard byte: far past any record, so that the mandatory byte-range
// lock never refuses a reader's or the owner's I/O.
inline constexpr std::uint64_t guard_byte = 0x7FFFFFFFFFFFFFFEULL;

// LockFileEx plays flock's part: exclusive, fail at once, held by this
// handle (another handle, even in this process, is refused).
inline flock_result try_flock(HANDLE handle, std::error_code& ec) {
  auto at = at_offset(guard_byte);
  if (::LockFileEx(handle, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &at))
    return flock_result::locked;
  const DWORD error = ::GetLastError();
  if (error == ERROR_LOCK_VIOLATION || error == ERROR_IO_PENDING) return flock_result::busy;
  ec = win_code(error);
  if (error == ERROR_NOT_SUPPORTED || error == ERROR_INVALID_FUNCTION) return flock_result::unsupported;
  return flock_result::failed;
}

inline void unlock_flock(HANDLE handle) {
  auto at = at_offset(guard_byte);
  ::UnlockFileEx(handle, 0, 1, 0, &at);
}

// A private name beside path for a file on its way out, in the shape of a
// private publication file, ".<name>.<pid>-<nanoseconds>-<counter>-<hex>.tmp",
// so that one left behind (see remove_through) is swept like those.
inline std::filesystem::path aside_name(const std::filesystem::path& path) {
  static std::atomic<std::uint64_t> counter{0};
  LARGE_INTEGER tick{};
  ::QueryPerformanceCounter(&tick);
  char hex[17] = {};
  std::to_chars(hex, hex + 16, static_cast<std::uint64_t>(tick.QuadPart), 16);
  const auto unique = std::to_string(::GetCurrentProcessId()) + "-" +
                      std::to_string(unix_nanos(std::chrono::system_clock::now())) + "-" + std::to_string(++counter) +
                      "-" + hex;
  return protocol_name(path, unique, ".tmp");
}

// Renames the file behind handle to target, never replacing a file there.
inline bool rename_handle(HANDLE handle, const std::filesystem::path& target) {
  const auto name = win32_path(target);
  const std::size_t bytes = sizeof(FILE_RENAME_INFO) + name.size() * sizeof(wchar_t);
  std::vector<unsigned char> buffer(bytes, 0);
  auto* info = reinterpret_cast<FILE_RENAME_INFO*>(buffer.data());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast): a variable-length Win32 record
  info->ReplaceIfExists = FALSE;  // NOLINT(cppcoreguidelines-pro-type-union-access): a Win32 union member
  info->RootDirectory = nullptr;
  info->FileNameLength = static_cast<DWORD>(name.size() * sizeof(wchar_t));
  std::memcpy(info->FileName, name.c_str(), name.size() * sizeof(wchar_t));
  return ::SetFileInformationByHandle(handle, FileRenameInfo, info, static_cast<DWORD>(bytes)) != 0;
}

inline bool delete_on_close(HANDLE handle) {
  FILE_DISPOSITION_INFO disposition{};
  disposition.DeleteFile = TRUE;
  return ::SetFileInformationByHandle(handle, FileDispositionInfo, &disposition, sizeof disposition) != 0;
}

// POSIX semantics (Windows 10 1709 and later, on NTFS): the name goes at
// once, even while others have the file open, as unlink() does; the
// read-only attribute does not refuse it. False where not supported.
inline bool delete_now(HANDLE handle) {
  // FILE_DISPOSITION_INFO_EX and its flags, spelled out: older SDKs (and
  // mingw-w64's) lack them.
  struct disposition_ex {
    ULONG flags;
  };
  constexpr ULONG flag_delete = 0x1;
  constexpr ULONG flag_posix_semantics = 0x2;
  constexpr ULONG flag_ignore_readonly = 0x10;
  constexpr auto file_disposition_info_ex = static_cast<FILE_INFO_BY_HANDLE_CLASS>(21);
  disposition_ex disposition{flag_delete | flag_posix_semantics | flag_ignore_readonly};
  return ::SetFileInformationByHandle(handle, file_disposition_info_ex, &disposition, sizeof disposition) != 0;
}

// Removes the file behind handle (opened with DELETE access), whose name is
// path, so that path is free at once even while others have the file open:
// at once where POSIX semantics are supported, else renamed aside to a
// private name, then deleted when closed (a plain delete would leave the
// name taken, "delete pending", until the last handle closes). A delete
// refused after the rename (a read-only file) gives the name back, so that
// nothing is half-done; only if the name was taken meanwhile does the file
// stay aside, under a name the leftover sweep removes.
inline std::error_code remove_through(HANDLE handle, const std::filesystem::path& path) {
  if (delete_now(handle)) return {};
  if (!rename_handle(handle, aside_name(path))) return win_code();
  if (delete_on_close(handle)) return {};
  const auto refused = win_code();
  rename_handle(handle, path);
  return refused;
}

inline std::error_code remove_name(const std::filesystem::path& path) {
  const auto handle = open_name(path, DELETE | FILE_READ_ATTRIBUTES);
  if (!handle) return win_code();
  return remove_through(handle.get(), path);
}

// No owner to name: on Windows an ACL, not a uid, decides.
inline std::string describe_user(std::uint32_t /*uid*/) { return "another account"; }

// Why a removal was refused, for the error message.
inline std::string removal_refused_hint(const file_facts& /*facts*/) {
  return " (this account may not delete it, or a program has it open without sharing delete access)";
}

// mkdir -p; mode is ignored (the new directory inherits its parent's ACL).
// NOLINTNEXTLINE(misc-no-recursion): one level per path component
inline std::error_code make_directories(const std::filesystem::path& dir, mode_bits mode) {
  if (dir.empty()) return {};
  if (::CreateDirectoryW(win32_path(dir).c_str(), nullptr) != 0) return {};
  DWORD error = ::GetLastError();
  if (error == ERROR_ALREADY_EXISTS) return {};
  if (error != ERROR_PATH_NOT_FOUND && error != ERROR_FILE_NOT_FOUND) return win_code(error);
  const auto parent = dir.parent_path();
  if (parent == dir) return win_code(error);
  if (auto ec = make_directories(parent, mode)) return ec;
  if (::CreateDirectoryW(win32_path(dir).c_str(), nullptr) != 0) return {};
  error = ::GetLastError();
  return error == ERROR_ALREADY_EXISTS ? std::error_code{} : win_code(error);
}

// On a drive letter a user marked remote (wine's "network" drives, too), or
// a UNC path. GetVolumePathNameW takes MAX_PATH at most (and finds volumes
// mounted in folders); past that, the path's own root decides: a UNC share
// is remote, a drive letter is asked for its type. (Not the handle's final
// path: wine answers it through another drive letter.)
inline bool on_remote_drive(const std::filesystem::path& at) {
  if (at.native().size() <= MAX_PATH) {
    wchar_t volume[MAX_PATH + 1] = {};
    return ::GetVolumePathNameW(at.c_str(), volume, MAX_PATH + 1) != 0 && ::GetDriveTypeW(volume) == DRIVE_REMOTE;
  }
  std::wstring root = at.root_path().native();
  if (root.starts_with(L"\\\\?\\UNC\\")) return true;
  if (root.starts_with(L"\\\\?\\")) root.erase(0, 4);  // "\\?\X:\" -> "X:\"
  else if (root.starts_with(L"\\\\")) return !root.starts_with(L"\\\\.\\");  // \\server\share\ (not a device)
  return root.size() == 3 && root[1] == L':' && ::GetDriveTypeW(root.c_str()) == DRIVE_REMOTE;
}

// Local only where one kernel sees every byte-range lock and file ids
// name files for good: NTFS or ReFS, on a volume that is not remote. The
// rest takes the network path: SMB shares and mapped drives, junctions and
// symbolic links into them (the directory is opened through them), FAT and
// exFAT (whose file ids are directory slots, reused at once), and
// user-mode file systems (WinFsp, Dokan: their locks and ids are their
// own). Decided on the nearest directory that exists.
inline fs_path_decision decide_fs_path(const std::filesystem::path& dir) {
  fs_path_decision out;
  std::error_code ec;
  auto at = std::filesystem::absolute(dir.empty() ? std::filesystem::path(L".") : dir, ec);
  if (ec) return out;
  out.final = true;
  unique_fd handle;
  for (;;) {
    handle = unique_fd(::CreateFileW(win32_path(at).c_str(), FILE_READ_ATTRIBUTES, share_all, nullptr,
                                     OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, nullptr));
    if (handle) break;
    const DWORD error = ::GetLastError();
    if (error != ERROR_FILE_NOT_FOUND && error != ERROR_PATH_NOT_FOUND) return out;  // unreachable, denied: network
    const auto parent = at.parent_path();
    if (parent == at || parent.empty()) return out;
    at = parent;
    out.final = false;
  }
  wchar_t file_system[MAX_PATH + 1] = {};
  if (!::GetVolumeInformationByHandleW(handle.get(), nullptr, 0, nullptr, nullptr, nullptr, file_system,
                                       MAX_PATH + 1))
    return out;
  const std::wstring_view name = file_system;
  FILE_REMOTE_PROTOCOL_INFO remote{};
  const bool is_remote =
      ::GetFileInformationByHandleEx(handle.get(), FileRemoteProtocolInfo, &remote, sizeof remote) != 0;
  const bool remote_drive = on_remote_drive(at);
  out.path = (name == L"NTFS" || name == L"ReFS") && !is_remote && !remote_drive ? fs_path::local : fs_path::network;
  return out;
}

inline std::error_code vanished_as_enoent(std::error_code ec) {
  return ec == std::errc::no_such_file_or_directory ? std::make_error_code(std::errc::no_such_file_or_directory)
                                                    : ec;
}

// Moves a file aside, never replacing one there; ENOENT when it vanished.
// (A source that is being deleted has vanished too: Win32 says "access
// denied" for it. The destination is a fresh private name.)
inline std::error_code move_name(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::MoveFileExW(win32_path(from).c_str(), win32_path(to).c_str(), 0) != FALSE) return {};
  if (last_error_was_delete_pending()) return std::make_error_code(std::errc::no_such_file_or_directory);
  return vanished_as_enoent(win_code());
}

// Gives a moved-aside file its name back, never replacing: when the name
// has been taken meanwhile, the aside file is removed (see the POSIX one).
inline void put_back(const std::filesystem::path& aside, const std::filesystem::path& path) {
  if (::MoveFileExW(win32_path(aside).c_str(), win32_path(path).c_str(), 0) != 0) return;
  const DWORD error = ::GetLastError();
  if (error == ERROR_ALREADY_EXISTS || error == ERROR_FILE_EXISTS) remove_name(aside);
}

// The names in dir that start with prefix. A listing cut short by an error
// is that error: a fencing token taken from a partial listing could be lower
// than one already handed out.
inline std::error_code list_names(const std::filesystem::path& dir, std::wstring_view prefix,
                                  std::vector<std::wstring>& names) {
  names.clear();
  WIN32_FIND_DATAW entry{};
  HANDLE search =
      ::FindFirstFileExW(win32_path(dir / L"*").c_str(), FindExInfoBasic, &entry, FindExSearchNameMatch, nullptr, 0);
  if (search == INVALID_HANDLE_VALUE) {
    const DWORD error = ::GetLastError();
    return error == ERROR_FILE_NOT_FOUND ? std::error_code{} : win_code(error);  // not even "." (a root)
  }
  DWORD error = ERROR_NO_MORE_FILES;
  do {
    const std::wstring_view name = entry.cFileName;
    if (name.substr(0, prefix.size()) == prefix) names.emplace_back(name);
  } while (::FindNextFileW(search, &entry) != 0 || (error = ::GetLastError(), false));
  ::FindClose(search);
  return error == ERROR_NO_MORE_FILES ? std::error_code{} : win_code(error);
}

// The names in dir that start with prefix (for sweeping protocol
// leftovers): what could be listed.
inline std::vector<std::wstring> names_starting_with(const std::filesystem::path& dir, std::wstring_view prefix) {
  std::vector<std::wstring> names;
  (void)list_names(dir, prefix, names);
  return names;
}

// Writes bytes into a private file nobody reads, then renames it onto path
// without replacement, through its handle: no reader ever sees a partial
// record, and an existing file (held, or someone's own) is never replaced.
inline publication publish_new_file(const std::filesystem::path& path, std::string_view bytes, mode_bits /*mode*/,
                                    const std::filesystem::path& lock_file, std::string_view owner) {
  publication out;
  auto fail = [&](const char* operation, std::error_code ec) {
    if (out.fd) delete_on_close(out.fd.get());
    out.fd.reset();
    out.error = ec;
    out.operation = operation;
    return std::move(out);
  };
  const auto private_name = protocol_name(lock_file, owner, ".tmp");
  out.fd = open_name(private_name, GENERIC_READ | GENERIC_WRITE | DELETE, CREATE_NEW, FILE_ATTRIBUTE_NORMAL);
  if (!out.fd) return fail("create lock file", win_code());
  if (auto ec = write_at(out.fd.get(), bytes, 0)) return fail("write lock file", ec);
  if (!rename_handle(out.fd.get(), path)) {
    const DWORD error = ::GetLastError();
    // ERROR_ALREADY_EXISTS: the name is taken (held); reported as EEXIST.
    // A file being deleted still holds its name ("delete pending", until
    // the last program that has it open closes it): taken, too, for now.
    const bool taken = error == ERROR_ALREADY_EXISTS || error == ERROR_FILE_EXISTS || last_error_was_delete_pending();
    return fail("create lock file", taken ? std::make_error_code(std::errc::file_exists) : win_code(error));
  }
  // Kept without DELETE access: a handle with it refuses every opener that
  // does not share delete (fopen, most editors), and a reader must be able
  // to look at a held lock. Removal opens the name with DELETE anew. Where
  // the handle cannot be reopened, the lock is not kept that way: it is
  // removed again through the handle that published it.
  unique_fd kept{::ReOpenFile(out.fd.get(), GENERIC_READ | GENERIC_WRITE, share_all, 0)};
  if (!kept) {
    const auto ec = win_code();
    remove_through(out.fd.get(), path);
    out.fd.reset();
    out.error = ec;
    out.operation = "reopen lock file";
    return out;
  }
  out.fd = std::move(kept);
  return out;
}

// A look at someone else's lock file: the type first, through a handle that
// can neither read nor write (the name itself, never a reparse point's
// target), then the same file reopened for reading (ReOpenFile: no name
// lookup in between), and its bytes.
inline observed_file observe_file(const std::filesystem::path& path, fs_path kind = fs_path::local) {
  observed_file out;
  const auto look = open_name(path, FILE_READ_ATTRIBUTES);
  if (!look) {
    out.error = last_error_was_delete_pending() ? errno_code(ENOENT) : vanished_as_enoent(win_code());
    out.operation = "open lock file";
    return out;
  }
  if ((out.error = vanished_as_enoent(stat_fd(look.get(), out.facts)))) return out;
  if (out.facts.symlink) {
    out.error = errno_code(ELOOP);
    out.operation = "open lock file";
    return out;
  }
  if (out.facts.directory) {
    out.error = errno_code(EISDIR);
    return out;
  }
  if (!out.facts.regular) {
    out.error = errno_code(EINVAL);
    out.operation = "read lock file (not a regular file)";
    return out;
  }
  // Read-write where permitted: LockFileEx needs a readable or writable
  // handle, and the guard is taken on this one. Read-only where this
  // account may not write, or a program has it open without sharing write
  // access. A reparse point that is not a link is opened through its filter.
  FILE_ATTRIBUTE_TAG_INFO tag{};
  const bool served_by_filter = ::GetFileInformationByHandleEx(look.get(), FileAttributeTagInfo, &tag, sizeof tag) != 0 &&
                                (tag.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0;
  const DWORD flags = served_by_filter ? 0 : FILE_FLAG_OPEN_REPARSE_POINT;
  out.fd.reset(::ReOpenFile(look.get(), GENERIC_READ | GENERIC_WRITE, share_all, flags));
  if (!out.fd && (::GetLastError() == ERROR_ACCESS_DENIED || ::GetLastError() == ERROR_SHARING_VIOLATION))
    out.fd.reset(::ReOpenFile(look.get(), GENERIC_READ, share_all, flags));
  if (!out.fd) {
    const DWORD error = ::GetLastError();
    out.error = vanished_as_enoent(win_code(error));
    out.operation = error == ERROR_SHARING_VIOLATION
                        ? "open lock file (a program has it open without sharing read access)"
                        : "open lock file";
    return out;
  }
  if (kind == fs_path::network) {
    if ((out.error = vanished_as_enoent(stat_fd_fresh(out.fd.get(), out.facts)))) return out;
  }
  out.error = vanished_as_enoent(read_prefix(out.fd.get(), out.bytes, max_record_bytes));
  return out;
}

// UTF-16 from Win32 as the UTF-8 the record carries.
inline std::string to_utf8(std::wstring_view text) {
  if (text.empty()) return {};
  const int size = ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), nullptr, 0,
                                         nullptr, nullptr);
  std::string out(static_cast<std::size_t>(size > 0 ? size : 0), '\0');
  if (size > 0)
    ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), out.data(), size, nullptr,
                          nullptr);
  return out;
}

inline std::string host_name() {
  wchar_t buffer[256] = {};
  DWORD size = 255;
  if (!::GetComputerNameExW(ComputerNameDnsHostname, buffer, &size)) return {};
  return to_utf8(std::wstring_view(buffer, size));
}

// The boot time, in FILETIME ticks, as the boot id: the kernel's own record
// (NtQuerySystemInformation, SystemTimeOfDayInformation), not "now minus the
// uptime", which drifts by a tick between two processes. Empty when it
// cannot be read: then only the lease rule decides.
inline std::string boot_id() {
  struct time_of_day {
    LARGE_INTEGER boot_time;
    LARGE_INTEGER current_time;
    LARGE_INTEGER time_zone_bias;
    ULONG time_zone_id;
    ULONG reserved;
    ULONGLONG boot_time_bias;
    ULONGLONG sleep_time_bias;
  };
  const auto query = ntdll_function<LONG(WINAPI*)(int, void*, ULONG, ULONG*)>("NtQuerySystemInformation");
  if (!query) return {};
  time_of_day info{};
  if (query(3 /* SystemTimeOfDayInformation */, &info, sizeof info, nullptr) < 0) return {};
  // The kernel moves the boot time with every step of the system clock and
  // adds the same step to boot_time_bias: the difference stays the boot's.
  const auto boot = static_cast<std::uint64_t>(info.boot_time.QuadPart) - info.boot_time_bias;
  return "windows-boot-" + std::to_string(boot);
}

// Windows has one PID space per machine; a process-isolated container has
// its own, and its own host name. A hash of the host name stands for the
// PID space, so that a container's records are never probed here.
inline std::uint64_t pid_namespace() {
  std::uint64_t hash = 14695981039346656037ULL;  // FNV-1a
  for (const char c : host_name()) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return hash | 1U;  // never 0, which means "unknown"
}

inline std::uint64_t creation_time(HANDLE process) {
  FILETIME created{};
  FILETIME exited{};
  FILETIME kernel{};
  FILETIME user{};
  if (!::GetProcessTimes(process, &created, &exited, &kernel, &user)) return 0;
  return ticks_of(created);
}

// Dead only on proof: no such process, a process object already signalled
// (exited; someone still holds a handle), or a different creation time (the
// pid was reused). Anything unclear (access denied): alive.
// SYNCHRONIZE is not granted on another account's processes (services,
// elevated ones), so the exit code answers there.
inline liveness probe_process(int pid, std::uint64_t start_time) {
  unique_fd process(::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE, FALSE, static_cast<DWORD>(pid)));
  const bool can_wait = static_cast<bool>(process);
  if (!process && ::GetLastError() == ERROR_ACCESS_DENIED)
    process.reset(::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, static_cast<DWORD>(pid)));
  if (!process) return ::GetLastError() == ERROR_INVALID_PARAMETER ? liveness::dead : liveness::alive;
  if (can_wait && ::WaitForSingleObject(process.get(), 0) == WAIT_OBJECT_0) return liveness::dead;
  DWORD exit_code = 0;
  if (!can_wait && ::GetExitCodeProcess(process.get(), &exit_code) && exit_code != STILL_ACTIVE)
    return liveness::dead;
  if (start_time != 0) {
    const auto created = creation_time(process.get());
    if (created != 0 && created != start_time) return liveness::dead;
  }
  return liveness::alive;
}

inline int current_pid() { return static_cast<int>(::GetCurrentProcessId()); }

// No fork on Windows: one generation, and a registry with nothing to do.
inline std::uint64_t fork_generation() { return 0; }

class fork_registry {
 public:
  static fork_registry& instance() {
    static fork_registry registry;
    return registry;
  }
  void add(fork_sensitive* /*member*/) {}
  void remove(fork_sensitive* /*member*/) noexcept {}
};

inline const process_identity& self_identity() {
  // Made once and never freed: a static PIDLock released at exit may still
  // ask for it.
  static const process_identity* const self = [] {
    auto* made = new process_identity;  // NOLINT(cppcoreguidelines-owning-memory): never freed, see above
    made->pid = current_pid();
    made->start_time = creation_time(::GetCurrentProcess());
    made->host = host_name();
    made->boot_id = boot_id();
    made->pid_namespace = pid_namespace();
    return made;
  }();
  return *self;
}

// Thread names and signal masks: nothing to do (no signals reach a thread).
inline void name_this_thread(const char* /*name*/) {}

class signals_blocked {
 public:
  signals_blocked() = default;
  // User-provided, so that a scope's guard is not an "unused variable".
  ~signals_blocked() {}  // NOLINT(modernize-use-equals-default)
  signals_blocked(const signals_blocked&) = delete;
  signals_blocked& operator=(const signals_blocked&) = delete;
};

// Each waiter watches its own directory (change notifications have no
// per-process limit like inotify's instances), so the process-wide watch
// has nothing to share.
class directory_watch {
 public:
  directory_watch() = default;
  ~directory_watch() = default;
  directory_watch(const directory_watch&) = delete;
  directory_watch& operator=(const directory_watch&) = delete;
  directory_watch(directory_watch&&) = delete;
  directory_watch& operator=(directory_watch&&) = delete;
};

// What a waiting lock sleeps on between attempts: the lock file's name
// leaving its directory (ReadDirectoryChangesW), the holder's process
// handle, and a wake-up event from this process (a stop request, a release
// by another thread).
//
// The watch reports every name change in the directory, the private files
// of our own attempts and of other waiters included; only a change that
// frees the lock's own name (removed, or renamed away: a release renames the
// file aside) wakes a waiter, the others are read and slept through. One
// read is in flight at a time; between reads the directory handle keeps
// collecting changes, so none is missed, and an overflow (more than the
// buffer holds) counts as a wake-up. Whichever waiting thread reads the
// changes counts a freed name in freed_; the others, woken by the same
// event, see the count move. A watch whose read fails (a share that refuses
// change notification) is given up: its waiters fall back to the poll
// period rather than waking at once, again and again.
class wait_channel {
 public:
  wait_channel(const std::filesystem::path& lock_file, directory_watch& /*watch*/)
      : directory_(lock_file.parent_path()),
        name_(lock_file.filename().native()),
        wake_(::CreateEventW(nullptr, TRUE, FALSE, nullptr)),
        changed_(::CreateEventW(nullptr, TRUE, FALSE, nullptr)) {}
  ~wait_channel() {
    std::lock_guard guard(watch_mutex_);
    close_watch();
  }
  wait_channel(const wait_channel&) = delete;
  wait_channel& operator=(const wait_channel&) = delete;
  wait_channel(wait_channel&&) = delete;
  wait_channel& operator=(wait_channel&&) = delete;

  static bool forgotten() { return false; }  // no fork

  // Watches the directory, again after the directory could not be opened.
  void watch() {
    std::lock_guard guard(watch_mutex_);
    if (directory_handle_ || given_up_ || !changed_) return;
    directory_handle_ = unique_fd(::CreateFileW(win32_path(directory_).c_str(), FILE_LIST_DIRECTORY, share_all, nullptr,
                                                OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED,
                                                nullptr));
    if (directory_handle_ && !start_read()) close_watch();
  }

  void notify() { ::SetEvent(wake_.get()); }
  void drain() { ::ResetEvent(wake_.get()); }

  // A waiting call begins and ends (PIDLock::wait_until, through
  // waiting_call): when the last one ends, the directory's handle is
  // closed, so that a lock that waited once does not keep its directory
  // open (and its changes queued) for the rest of its life.
  void enter() {
    std::lock_guard guard(watch_mutex_);
    ++waiting_calls_;
  }
  void leave() {
    std::lock_guard guard(watch_mutex_);
    if (--waiting_calls_ == 0) close_watch();
  }

  // Whether the directory is watched now (for the tests).
  bool watching() {
    std::lock_guard guard(watch_mutex_);
    return static_cast<bool>(directory_handle_);
  }

  // Sleeps until the deadline, a wake-up, the lock's name leaving the
  // directory, or (when holder is a process handle) the holder's exit.
  void wait_until(steady_clock_time deadline, HANDLE holder) {
    const auto freed_before = freed_count();
    for (;;) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      const auto timeout = static_cast<DWORD>(std::min<long long>(left, 0x7FFFFFFF));
      HANDLE handles[3];
      DWORD count = 0;
      if (wake_) handles[count++] = wake_.get();
      const DWORD changed_at = count;
      const bool watched = watching();
      if (watched) handles[count++] = changed_.get();
      if (holder != nullptr) handles[count++] = holder;
      if (count == 0) {
        ::Sleep(timeout);
        return;
      }
      const DWORD ready = ::WaitForMultipleObjects(count, handles, FALSE, timeout);
      if (ready == WAIT_TIMEOUT) continue;
      if (ready >= WAIT_OBJECT_0 + count) return;  // failed: attempt again
      if (watched && ready == WAIT_OBJECT_0 + changed_at) {
        read_changes();
        if (freed_count() == freed_before) continue;  // only other names changed: sleep on
      }
      return;
    }
  }

 private:
  std::uint64_t freed_count() {
    std::lock_guard guard(watch_mutex_);
    return freed_;
  }

  // Starts the next read; the event is set when it completes.
  bool start_read() {
    ::ResetEvent(changed_.get());
    pending_ = OVERLAPPED{};
    pending_.hEvent = changed_.get();
    return ::ReadDirectoryChangesW(directory_handle_.get(), buffer_.data(), static_cast<DWORD>(sizeof buffer_), FALSE,
                                   FILE_NOTIFY_CHANGE_FILE_NAME, nullptr, &pending_, nullptr) != 0;
  }

  // Cancels the read in flight and waits for it to end, so that the
  // kernel never writes into the buffer after this.
  void close_watch() {
    if (!directory_handle_) return;
    DWORD bytes = 0;
    if (::CancelIoEx(directory_handle_.get(), &pending_) || ::GetLastError() != ERROR_NOT_FOUND)
      ::GetOverlappedResult(directory_handle_.get(), &pending_, &bytes, TRUE);
    directory_handle_.reset();
  }

  // Reads the completed changes (when another thread has not already),
  // counts the lock's name removed or renamed away (or changes lost to an
  // overflow) in freed_, and starts the next read.
  void read_changes() {
    std::lock_guard guard(watch_mutex_);
    if (!directory_handle_ || !HasOverlappedIoCompleted(&pending_)) return;  // another waiter read them first
    DWORD bytes = 0;
    if (!::GetOverlappedResult(directory_handle_.get(), &pending_, &bytes, FALSE)) {
      give_up();
      return;
    }
    if (bytes == 0 || names_freed(bytes)) ++freed_;  // 0: an overflow, the changes were not kept
    if (!start_read()) give_up();
  }

  // Whether the records in the first bytes of the buffer free the lock's
  // name. The last record is not padded: its length is its header's and
  // its name's, which may be less than sizeof(FILE_NOTIFY_INFORMATION).
  bool names_freed(std::size_t bytes) const {
    constexpr std::size_t header = offsetof(FILE_NOTIFY_INFORMATION, FileName);
    const auto* const base = reinterpret_cast<const char*>(buffer_.data());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast): a Win32 record stream
    for (std::size_t at = 0; at + header <= bytes;) {
      FILE_NOTIFY_INFORMATION entry{};
      std::memcpy(&entry, base + at, header);
      if (at + header + entry.FileNameLength > bytes) return true;  // malformed: attempt rather than miss it
      const auto* name = reinterpret_cast<const wchar_t*>(base + at + header);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
      const auto length = static_cast<int>(entry.FileNameLength / sizeof(wchar_t));
      if ((entry.Action == FILE_ACTION_REMOVED || entry.Action == FILE_ACTION_RENAMED_OLD_NAME) &&
          ::CompareStringOrdinal(name, length, name_.c_str(), static_cast<int>(name_.size()), TRUE) == CSTR_EQUAL)
        return true;
      if (entry.NextEntryOffset == 0) return false;
      at += entry.NextEntryOffset;
    }
    return false;
  }

  // A read that fails, or cannot be started again: woken once (the
  // directory may have gone, and the lock with it), then no watch at all.
  void give_up() {
    close_watch();
    given_up_ = true;
    ++freed_;
  }

  const std::filesystem::path directory_;
  const std::wstring name_;  // the lock file's name in directory_
  unique_fd wake_;           // a manual-reset event
  unique_fd changed_;        // a manual-reset event: the read in flight completed
  std::mutex watch_mutex_;
  int waiting_calls_ = 0;  // guarded by watch_mutex_
  // Guarded by watch_mutex_: the directory, its read in flight and the
  // buffer the kernel writes into (DWORD-aligned, as it requires).
  unique_fd directory_handle_;
  OVERLAPPED pending_{};
  std::array<DWORD, 2048> buffer_{};
  std::uint64_t freed_ = 0;  // how often the lock's name was freed (or a wake-up was owed)
  bool given_up_ = false;    // the watch failed: waiters use the poll period
};

// A wait an event loop owns (lockfile::lock_waiter): none on Windows yet
// (one handle cannot stand for the directory's changes, the holder's exit
// and a time at once), so fd() is empty and the caller's own timer at the
// planned time is the fallback.
class wait_descriptor {
 public:
  wait_descriptor(const std::filesystem::path& /*lock_file*/, directory_watch& /*watch*/) {}
  // NOLINTBEGIN(readability-convert-member-functions-to-static): the POSIX one has state
  native_handle fd() const { return no_handle; }
  bool forgotten() const { return false; }  // no fork
  bool prepare() { return true; }
  void arm(steady_clock_time /*at*/, unique_fd /*holder_exit*/) {}
  void disarm() {}
  // NOLINTEND(readability-convert-member-functions-to-static)
};

// Creates an empty file under a new name (EEXIST when the name exists) and
// makes it durable (fencing generations). NTFS and ReFS journal the name's
// creation with the file's metadata, which FlushFileBuffers writes out; a
// directory handle cannot be flushed on every file system, and is not.
inline std::error_code create_durable_name(const std::filesystem::path& path, mode_bits /*mode*/) {
  const unique_fd created(::CreateFileW(win32_path(path).c_str(), GENERIC_WRITE, share_all, nullptr, CREATE_NEW,
                                        FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT, nullptr));
  if (!created) {
    const DWORD error = ::GetLastError();
    // A name being deleted (delete pending) is still taken, for now.
    const bool taken = error == ERROR_ALREADY_EXISTS || error == ERROR_FILE_EXISTS || last_error_was_delete_pending();
    return taken ? std::make_error_code(std::errc::file_exists) : win_code(error);
  }
  if (::FlushFileBuffers(created.get()) == FALSE) return win_code();
  return {};
}

// The holder's process handle, which is signalled when it exits; checked
// against its creation time so that a reused pid is not mistaken for the
// holder. Empty when unavailable or when the pid no longer names the holder.
inline unique_fd open_holder_exit_fd(int pid, std::uint64_t start_time) {
  unique_fd process(::OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, FALSE, static_cast<DWORD>(pid)));
  if (!process) return process;
  if (start_time != 0 && creation_time(process.get()) != start_time) return unique_fd{};
  if (::WaitForSingleObject(process.get(), 0) == WAIT_OBJECT_0) return unique_fd{};
  return process;
}

}  // namespace lockfile::detail

#endif  // LOCKFILE_DETAIL_PLATFORM_WINDOWS_HPP
