# Warnings for the project's own targets; -Werror when CKPTKIT_WERROR is on (CI presets).
function(ckptkit_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                         -Wno-sign-conversion -Wnon-virtual-dtor -Wold-style-cast
                         -Wcast-align -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough)
  if(CKPTKIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
