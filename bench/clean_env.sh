# bench/clean_env.sh - sourced by the scripts that time gptvq beside llama.cpp:
# `"${clean[@]}" CMD ...` runs CMD in the environment a user has, without
# every variable that steers OpenMP, OpenBLAS or gptvq (OMP_*, GOMP_*, KMP_*,
# OPENBLAS_*, GOTO_*, GPTVQ_*) that this shell exports. Some machines export
# them: this one sets OPENBLAS_CORETYPE=Haswell, which gives OpenBLAS its
# AVX2 kernels on an AVX-512 CPU (where it would pick Cooperlake) and slowed
# gptvq's F16 prefill by a third (830 against 1250 t/s pp512).
clean=(env)
while IFS= read -r v; do
    case $v in OMP_* | GOMP_* | KMP_* | OPENBLAS_* | GOTO_* | GPTVQ_*) clean+=(-u "$v") ;; esac
done < <(compgen -e)
