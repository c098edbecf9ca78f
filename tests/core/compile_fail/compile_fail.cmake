# cmake -DCXX=<compiler> -DSOURCE=<file.cpp> "-DINCLUDES=<dir;dir>" -P compile_fail.cmake
# Compiles SOURCE (syntax only): it must fail, and the output must hold every "// EXPECT: <text>"
# line of SOURCE, so each mistake keeps one readable static_assert message.
set(_args -std=c++20 -fsyntax-only)
foreach(dir IN LISTS INCLUDES)
  list(APPEND _args "-I${dir}")
endforeach()
execute_process(COMMAND "${CXX}" ${_args} "${SOURCE}" RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled; it must not")
endif()
file(STRINGS "${SOURCE}" _expects REGEX "// EXPECT: ")
if(NOT _expects)
  message(FATAL_ERROR "${SOURCE} has no // EXPECT: line")
endif()
foreach(line IN LISTS _expects)
  string(REGEX REPLACE "^.*// EXPECT: " "" _text "${line}")
  string(FIND "${out}${err}" "${_text}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "expected '${_text}' in the compiler output:\n${out}${err}")
  endif()
endforeach()
message(STATUS "compile-fail ok")
