# Warnings for the project's own targets only (never for consumers): PRIVATE, as errors.
function(dogpile_set_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wconversion -Wshadow -Wnon-virtual-dtor -Werror
    # Designated initializers that omit fields are the API style of the option structs.
    -Wno-missing-field-initializers)
endfunction()
