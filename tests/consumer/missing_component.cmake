# cmake -DSOURCE_DIR=... -DBINARY_DIR=... -DPREFIX=... -DCOMPONENT=... -DEXPECT=... -P missing_component.cmake
# Configures the missing_component project twice: REQUIRED must fail with EXPECT in the output;
# not REQUIRED must succeed and report the component as not found.
file(REMOVE_RECURSE "${BINARY_DIR}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BINARY_DIR}/required"
          "-DCMAKE_PREFIX_PATH=${PREFIX}" -DDOGPILE_REQUIRED=ON "-DDOGPILE_COMPONENT=${COMPONENT}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "configuring with REQUIRED COMPONENTS ${COMPONENT} succeeded:\n${out}${err}")
endif()
string(FIND "${out}${err}" "${EXPECT}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "expected '${EXPECT}' in the output:\n${out}${err}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BINARY_DIR}/optional"
          "-DCMAKE_PREFIX_PATH=${PREFIX}" -DDOGPILE_REQUIRED=OFF "-DDOGPILE_COMPONENT=${COMPONENT}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring with optional COMPONENTS ${COMPONENT} failed:\n${out}${err}")
endif()
message(STATUS "ok: ${EXPECT}")
