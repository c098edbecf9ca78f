# Warnings for the project's own targets only (never for consumers): always PRIVATE.
#
# Warnings are errors only under DOGPILE_WERROR (fmt's FMT_WERROR): the dev, sanitizer and
# release presets and CI turn it on; a plain build, an add_subdirectory or a FetchContent
# consumer leaves it off, because another compiler or optimisation level warns where ours does
# not (gcc 12 emits -Wrestrict false positives at -O2) and a user's build must not break on it.
option(DOGPILE_WERROR "Treat compiler warnings of dogpile's own targets as errors" OFF)

function(dogpile_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Wnon-virtual-dtor
    $<$<BOOL:${DOGPILE_WERROR}>:-Werror>
    # gcc 12 reports std::function / std::regex members as "may be used uninitialized" at -O1/-O2
    # (release and sanitizer builds; it is silent at -O0): known false positives, fatal with -Werror.
    $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>
    # gcc 12 at -O2/-O3 reports `"literal" + std::string` as a __builtin_memcpy of ~2^63 bytes
    # that may overlap (-Wrestrict; GCC bugzilla 105329 and duplicates): a false positive inside
    # libstdc++, seen in tests/core/test_lock.cpp and tests/backends_memory/test_memory_backend.cpp.
    # Only gcc < 13, so newer compilers keep the (useful) warning.
    $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-restrict>)
endfunction()
