# Warnings for the project's own targets only (never for consumers): PRIVATE, as errors.
function(dogpile_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Wnon-virtual-dtor -Werror
    # Designated initializers that omit fields are the API style of the option structs.
    -Wno-missing-field-initializers
    # gcc 12 reports std::function / std::regex members as "may be used uninitialized" at -O1/-O2
    # (release and sanitizer builds; it is silent at -O0): known false positives, fatal with -Werror.
    $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
endfunction()
