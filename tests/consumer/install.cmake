# cmake -DBUILD_DIR=... -DPREFIX=... [-DCONFIG=...] -P install.cmake
# A fresh install of the build tree into PREFIX (the fixture the consumer tests require).
file(REMOVE_RECURSE "${PREFIX}")
set(_config)
if(CONFIG)
  set(_config --config "${CONFIG}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${_config}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed: ${rc}")
endif()
if(NOT EXISTS "${PREFIX}/lib/cmake/dogpile/dogpileConfig.cmake" AND
   NOT EXISTS "${PREFIX}/lib64/cmake/dogpile/dogpileConfig.cmake")
  file(GLOB_RECURSE _cfg "${PREFIX}/*/dogpileConfig.cmake")
  if(NOT _cfg)
    message(FATAL_ERROR "no dogpileConfig.cmake under ${PREFIX}")
  endif()
endif()
