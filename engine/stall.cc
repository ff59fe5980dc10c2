#include "engine/stall.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace ringpoll {

#if defined(__linux__)
namespace {

// The name of the function symbol of ELF file `path` that contains address `value` (as
// the file's symbol table counts addresses), from its full symbol table (.symtab), which
// holds the local symbols dladdr cannot see: a coroutine's resume function (GCC's
// "[clone .actor]") is one. Empty when the file is stripped or has no such symbol.
std::string symtab_name(const char* path, uintptr_t value) {
  std::string out;
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  struct stat st {};
  void* map = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size > static_cast<off_t>(sizeof(ElfW(Ehdr))))
    map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return out;
  const auto* base = static_cast<const unsigned char*>(map);
  const size_t size = static_cast<size_t>(st.st_size);
  const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(base);
  const bool ok_header = std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 &&
                         eh->e_shoff + size_t{eh->e_shnum} * sizeof(ElfW(Shdr)) <= size;
  const auto* sh = reinterpret_cast<const ElfW(Shdr)*>(base + (ok_header ? eh->e_shoff : 0));
  for (size_t i = 0; ok_header && i < eh->e_shnum && out.empty(); ++i) {
    if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
    const ElfW(Shdr)& strs = sh[sh[i].sh_link];
    if (sh[i].sh_offset + sh[i].sh_size > size || strs.sh_offset + strs.sh_size > size) break;
    const auto* sym = reinterpret_cast<const ElfW(Sym)*>(base + sh[i].sh_offset);
    const size_t n = sh[i].sh_size / sizeof(ElfW(Sym));
    for (size_t k = 0; k < n; ++k) {
      if (ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC || sym[k].st_name >= strs.sh_size) continue;
      if (value < sym[k].st_value || value >= sym[k].st_value + sym[k].st_size) continue;
      const char* name = reinterpret_cast<const char*>(base + strs.sh_offset + sym[k].st_name);
      out.assign(name, strnlen(name, strs.sh_size - sym[k].st_name));
      break;
    }
  }
  munmap(map, size);
  return out;
}

std::string demangled(const std::string& name) {
  int status = -1;
  char* d = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : name;
  std::free(d);
  return out;
}

}  // namespace
#endif

std::string describe_code(const void* code) {
  if (!code) return "the shard loop (inbox jobs, timers)";
  char buf[64];
#if defined(__linux__)
  Dl_info info{};
  if (dladdr(code, &info) != 0 && info.dli_fname) {
    const auto addr = reinterpret_cast<uintptr_t>(code);
    const auto off = addr - reinterpret_cast<uintptr_t>(info.dli_fbase);
    if (info.dli_sname) return demangled(info.dli_sname);
    // The main program: its path as the kernel knows it (dli_fname may be argv[0]).
    const bool main_program =
        info.dli_fname[0] == '\0' || std::strchr(info.dli_fname, '/') == nullptr;
    const char* path = main_program ? "/proc/self/exe" : info.dli_fname;
    const auto* eh = static_cast<const ElfW(Ehdr)*>(info.dli_fbase);
    const std::string name = symtab_name(path, eh->e_type == ET_DYN ? off : addr);
    if (!name.empty()) return demangled(name);
    std::snprintf(buf, sizeof buf, "+0x%zx", static_cast<size_t>(off));
    return std::string(info.dli_fname) + buf;
  }
#endif
  std::snprintf(buf, sizeof buf, "code at %p", code);
  return buf;
}

void log_stall(const StallReport& r) {
  const std::string what = describe_code(r.code);
  std::fprintf(stderr,
               "ringpoll: stall: shard %d did not poll for %.1f ms (%zu tasks run since); "
               "running %s\n",
               r.shard, static_cast<double>(r.since_poll_ns) / 1e6, r.tasks_since_poll,
               what.c_str());
}

}  // namespace ringpoll
