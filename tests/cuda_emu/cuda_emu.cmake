# The CUDA emulator build (A3FTA_CUDA_EMU=ON; tests/cuda_emu/README.md): the
# CUDA backend's .cu files, translated to C++ (translate.py), with the
# emulator's fibers, cuBLAS and NCCL; its runtime as a shared library; and its cuDNN as a
# libcudnn.so.9 of its own, which cuda_conv2d_dnn.cu loads with dlopen (the
# executables' run path names its directory).
enable_language(CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
find_package(Python3 REQUIRED COMPONENTS Interpreter)

set(a3fta_emu_dir ${CMAKE_CURRENT_LIST_DIR})
file(GLOB a3fta_emu_cu CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cu
     ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.h ${CMAKE_SOURCE_DIR}/src/dist/*.cu)
set(A3FTA_CUDA_EMU_SOURCES ${a3fta_emu_dir}/emu_threads.cpp ${a3fta_emu_dir}/emu_blas.cpp
                           ${a3fta_emu_dir}/emu_nccl.cpp)
# Translates the .cu file `cu` into ${CMAKE_BINARY_DIR}/cuda_emu/NAME.cpp (a
# header: NAME.h, where the translated files' #include finds it first) and
# appends that to the list named `out_list`.
function(a3fta_emu_translate cu out_list)
  get_filename_component(name ${cu} NAME_WE)
  get_filename_component(ext ${cu} EXT)
  if(ext STREQUAL ".h")
    set(out ${CMAKE_BINARY_DIR}/cuda_emu/${name}.h)
  else()
    set(out ${CMAKE_BINARY_DIR}/cuda_emu/${name}.cpp)
  endif()
  add_custom_command(OUTPUT ${out}
                     COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/cuda_emu
                     COMMAND Python3::Interpreter ${a3fta_emu_dir}/translate.py ${cu} ${out}
                     DEPENDS ${cu} ${a3fta_emu_dir}/translate.py
                     COMMENT "cuda emulator: translating ${name}${ext}")
  # As nvcc compiles device code: cuda_runtime.h included first, the device
  # branches (__CUDA_ARCH__), and a * b + c fused into an FMA wherever the
  # intrinsics do not forbid it.
  set_source_files_properties(${out} PROPERTIES
    COMPILE_OPTIONS "-include;${a3fta_emu_dir}/include/cuda_runtime.h;-ffp-contract=fast;-mfma"
    COMPILE_DEFINITIONS "__CUDACC__;__CUDA_ARCH__=900")
  set(${out_list} ${${out_list}} ${out} PARENT_SCOPE)
endfunction()
foreach(cu ${a3fta_emu_cu})
  a3fta_emu_translate(${cu} A3FTA_CUDA_EMU_SOURCES)
endforeach()

set(a3fta_emu_lib_dir ${CMAKE_BINARY_DIR}/cuda_emu/lib)
# The runtime (memory, errors, streams) is a shared library, one copy in the
# process, used both by the program and by the emulated libcudnn.so.9.
add_library(a3fta_emu_cudart SHARED ${a3fta_emu_dir}/emu_runtime.cpp ${a3fta_emu_dir}/emu_streams.cpp)
set_target_properties(a3fta_emu_cudart PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${a3fta_emu_lib_dir})
target_include_directories(a3fta_emu_cudart PRIVATE ${a3fta_emu_dir}/include)
target_compile_options(a3fta_emu_cudart PRIVATE -Wall -Wextra $<$<BOOL:${A3FTA_WERROR}>:-Werror>)
add_library(a3fta_emu_cudnn SHARED ${a3fta_emu_dir}/emu_cudnn.cpp)
set_target_properties(a3fta_emu_cudnn PROPERTIES OUTPUT_NAME cudnn SOVERSION 9 VERSION 9.0.0
                                                 LIBRARY_OUTPUT_DIRECTORY ${a3fta_emu_lib_dir})
target_include_directories(a3fta_emu_cudnn PRIVATE ${a3fta_emu_dir}/include)
target_compile_options(a3fta_emu_cudnn PRIVATE -Wall -Wextra $<$<BOOL:${A3FTA_WERROR}>:-Werror>)
target_link_libraries(a3fta_emu_cudnn PRIVATE a3fta_emu_cudart PkgConfig::OPENBLAS)
list(APPEND CMAKE_BUILD_RPATH ${a3fta_emu_lib_dir}) # dlopen("libcudnn.so.9") finds it there

function(a3fta_cuda_emu_configure target)
  set(warnings -Wall -Wextra -Wno-unknown-pragmas)
  if(A3FTA_WERROR)
    list(APPEND warnings -Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${warnings}>)
  target_include_directories(${target} PRIVATE
                             $<$<COMPILE_LANGUAGE:CXX>:${a3fta_emu_dir}/include>
                             $<$<COMPILE_LANGUAGE:CXX>:${CMAKE_SOURCE_DIR}/src/backend/cuda>)
  target_compile_definitions(${target} PUBLIC A3FTA_HAVE_CUDA=1 A3FTA_CUDA_EMU=1)
  target_link_libraries(${target} PUBLIC a3fta_emu_cudart)
  add_dependencies(${target} a3fta_emu_cudnn)
endfunction()
