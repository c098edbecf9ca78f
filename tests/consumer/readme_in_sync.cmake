# cmake -DREADME=... -DEXAMPLE=... -P readme_in_sync.cmake
# The README's quick start, between <!-- quick-start --> and <!-- /quick-start --> inside a
# ```cpp fence, must equal the example file byte for byte (the example is what CTest runs).
file(READ "${README}" readme)
file(READ "${EXAMPLE}" example)
set(begin_marker "<!-- quick-start -->\n```cpp\n")
set(end_marker "```\n<!-- /quick-start -->")
string(FIND "${readme}" "${begin_marker}" b)
string(FIND "${readme}" "${end_marker}" e)
if(b EQUAL -1 OR e EQUAL -1)
  message(FATAL_ERROR "README.md has no '<!-- quick-start -->' + ```cpp ... ``` + "
                      "'<!-- /quick-start -->' block")
endif()
string(LENGTH "${begin_marker}" blen)
math(EXPR start "${b} + ${blen}")
math(EXPR len "${e} - ${start}")
if(len LESS 0)
  message(FATAL_ERROR "README.md quick-start markers are out of order")
endif()
string(SUBSTRING "${readme}" ${start} ${len} block)
if(NOT block STREQUAL example)
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/readme_quick_start.cpp" "${block}")
  message(FATAL_ERROR "README.md quick start differs from ${EXAMPLE}; the README block is in "
                      "${CMAKE_CURRENT_BINARY_DIR}/readme_quick_start.cpp (diff them, then copy "
                      "the example into the README)")
endif()
message(STATUS "README quick start == ${EXAMPLE}")
