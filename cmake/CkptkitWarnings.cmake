# Warnings for the project's own targets; -Werror when CKPTKIT_WERROR is on (CI presets).
function(ckptkit_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                         -Wno-sign-conversion -Wnon-virtual-dtor -Wold-style-cast
                         -Wcast-align -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough)
  # GCC 12 at -O3 reports impossible overlaps inside std::string's own inlined copies
  # (-Wrestrict false positives, GCC bug 105329); with -Werror they break release builds of
  # ordinary string code.
  target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>)
  if(CKPTKIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
