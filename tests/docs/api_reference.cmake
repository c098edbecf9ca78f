# cmake -DDOXYGEN=... -DDOXYFILE=... -DSOURCE_DIR=... -DOUTPUT_DIR=... -P api_reference.cmake
# Runs doxygen on docs/Doxyfile and fails, listing them, if it printed any warning.
file(REMOVE_RECURSE ${OUTPUT_DIR})
file(MAKE_DIRECTORY ${OUTPUT_DIR})
set(ENV{DOGPILE_SOURCE_DIR} ${SOURCE_DIR})
set(ENV{DOGPILE_DOXYGEN_OUTPUT} ${OUTPUT_DIR})
execute_process(COMMAND ${DOXYGEN} ${DOXYFILE} WORKING_DIRECTORY ${SOURCE_DIR}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(warnings "")
if(EXISTS ${OUTPUT_DIR}/warnings.log)
  file(READ ${OUTPUT_DIR}/warnings.log warnings)
endif()
string(STRIP "${warnings}" warnings)
if(NOT rc EQUAL 0 OR NOT warnings STREQUAL "")
  string(REGEX MATCHALL "\n" _lines "\n${warnings}")
  list(LENGTH _lines n)
  message(FATAL_ERROR "doxygen failed (exit ${rc}); ${n} warning line(s), each an undocumented "
                      "or badly documented public declaration:\n${warnings}\n${out}${err}")
endif()
message(STATUS "API reference: ${OUTPUT_DIR}/html/index.html (no warnings)")
