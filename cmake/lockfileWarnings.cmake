# lockfile_add_warnings(<target>)
#
# Warnings for lockfile's own targets (tests, test helper, examples) — never
# for lockfile::lockfile itself, so consumers' flags are left alone.
# -Werror (/WX) is added when LOCKFILE_WERROR is ON (the presets turn it on).
include_guard(GLOBAL)

function(lockfile_add_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
    if(LOCKFILE_WERROR)
      target_compile_options(${target} PRIVATE /WX)
    endif()
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
    if(LOCKFILE_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
