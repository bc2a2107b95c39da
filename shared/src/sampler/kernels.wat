;; The sampler's hot loops in WebAssembly (kernels.ts loads them; scripts/build-kernels.ts
;; assembles this file into kernelsWasm.ts). Every kernel does the same float64 operations in the
;; same order as its JavaScript twin, so both paths give bit-identical results:
;; f64x2 lanes only run two elements' (or two accumulators') independent operation chains side by
;; side. No FMA (no relaxed SIMD): a fused multiply-add would round differently.
;;
;; Memory layout (kernels.ts writes the tables and constants, which rng.ts computes, at start-up):
;;     0  X_NEXT[128]  f64     1024  X_SCALED[128] f64     2048  F[129] f64
;;  3088  R f64   3096   1/R f64   3104  xoshiro128++ state s0..s3 (i32)   3120  stats s1..s6 (f64)
;;  4096… staging buffers (kernels.ts)
(module
  (import "m" "mem" (memory 1))
  (import "m" "exp" (func $exp (param f64) (result f64)))
  (import "m" "log" (func $log (param f64) (result f64)))

  ;; One xoshiro128++ step on the state in memory; returns the output word.
  (func $step (result i32)
    (local $s0 i32) (local $s1 i32) (local $s2 i32) (local $s3 i32) (local $r i32)
    i32.const 0 i32.load offset=3104 local.set $s0
    i32.const 0 i32.load offset=3108 local.set $s1
    i32.const 0 i32.load offset=3112 local.get $s0 i32.xor local.set $s2
    i32.const 0 i32.load offset=3116 local.get $s1 i32.xor local.set $s3
    ;; result = rotl(s0 + s3_old, 7) + s0, with s3_old = s3 ^ s1
    local.get $s0 local.get $s3 local.get $s1 i32.xor i32.add i32.const 7 i32.rotl local.get $s0 i32.add local.set $r
    i32.const 0 local.get $s0 local.get $s3 i32.xor i32.store offset=3104
    i32.const 0 local.get $s1 local.get $s2 i32.xor i32.store offset=3108
    i32.const 0 local.get $s2 local.get $s1 i32.const 9 i32.shl i32.xor i32.store offset=3112
    i32.const 0 local.get $s3 i32.const 11 i32.rotl i32.store offset=3116
    local.get $r
  )

  ;; Uniform in (0, 1): (u + ½)·2^-32.
  (func $open01 (result f64)
    call $step f64.convert_i32_u f64.const 0.5 f64.add f64.const 2.3283064365386963e-10 f64.mul
  )

  ;; rng.ts slowNormal: the tail (layer 0) or a wedge test for word $w with coordinate $x.
  (func $slow (param $w i32) (param $x f64) (result f64)
    (local $i i32) (local $tx f64) (local $ty f64)
    loop $again
      local.get $w i32.const 127 i32.and i32.const 3 i32.shl local.set $i
      local.get $i i32.eqz
      if
        loop $tail
          call $open01 call $log f64.neg i32.const 0 f64.load offset=3096 f64.mul local.set $tx
          call $open01 call $log f64.neg local.set $ty
          local.get $ty local.get $ty f64.add local.get $tx local.get $tx f64.mul f64.ge
          if
            i32.const 0 f64.load offset=3088 local.get $tx f64.add local.tee $tx
            f64.neg local.get $tx local.get $x f64.const 0 f64.lt select
            return
          end
          br $tail
        end
      end
      ;; y = F[i] + open01·(F[i+1] − F[i]); accept x when y < exp(−0.5·x·x)
      local.get $i f64.load offset=2048
      call $open01 local.get $i f64.load offset=2056 local.get $i f64.load offset=2048 f64.sub f64.mul
      f64.add
      f64.const -0.5 local.get $x f64.mul local.get $x f64.mul call $exp
      f64.lt
      if local.get $x return end
      call $step local.set $w
      local.get $w i32.const 127 i32.and i32.const 3 i32.shl local.set $i
      local.get $w i32.const 7 i32.shr_s f64.convert_i32_s f64.const 0.5 f64.add
      local.get $i f64.load offset=1024 f64.mul local.set $x
      local.get $x f64.abs local.get $i f64.load f64.lt
      if local.get $x return end
      br $again
    end
    unreachable
  )

  ;; rng.ts fillNormals: $n normals as float32 at $out; the fast path keeps the state in locals.
  (func $normals (export "normals") (param $out i32) (param $n i32)
    (local $s0 i32) (local $s1 i32) (local $s2 i32) (local $s3 i32) (local $w i32) (local $i i32)
    (local $t i32) (local $end i32) (local $x f64)
    i32.const 0 i32.load offset=3104 local.set $s0
    i32.const 0 i32.load offset=3108 local.set $s1
    i32.const 0 i32.load offset=3112 local.set $s2
    i32.const 0 i32.load offset=3116 local.set $s3
    local.get $out local.get $n i32.const 2 i32.shl i32.add local.set $end
    block $done
      loop $next
        local.get $out local.get $end i32.ge_u br_if $done
        local.get $s0 local.get $s3 i32.add i32.const 7 i32.rotl local.get $s0 i32.add local.set $w
        local.get $s1 i32.const 9 i32.shl local.set $t
        local.get $s2 local.get $s0 i32.xor local.set $s2
        local.get $s3 local.get $s1 i32.xor local.set $s3
        local.get $s1 local.get $s2 i32.xor local.set $s1
        local.get $s0 local.get $s3 i32.xor local.set $s0
        local.get $s2 local.get $t i32.xor local.set $s2
        local.get $s3 i32.const 11 i32.rotl local.set $s3
        local.get $w i32.const 127 i32.and i32.const 3 i32.shl local.set $i
        local.get $w i32.const 7 i32.shr_s f64.convert_i32_s f64.const 0.5 f64.add
        local.get $i f64.load offset=1024 f64.mul local.set $x
        local.get $x f64.abs local.get $i f64.load f64.ge
        if
          i32.const 0 local.get $s0 i32.store offset=3104
          i32.const 0 local.get $s1 i32.store offset=3108
          i32.const 0 local.get $s2 i32.store offset=3112
          i32.const 0 local.get $s3 i32.store offset=3116
          local.get $w local.get $x call $slow local.set $x
          i32.const 0 i32.load offset=3104 local.set $s0
          i32.const 0 i32.load offset=3108 local.set $s1
          i32.const 0 i32.load offset=3112 local.set $s2
          i32.const 0 i32.load offset=3116 local.set $s3
        end
        local.get $out local.get $x f32.demote_f64 f32.store
        local.get $out i32.const 4 i32.add local.set $out
        br $next
      end
    end
    i32.const 0 local.get $s0 i32.store offset=3104
    i32.const 0 local.get $s1 i32.store offset=3108
    i32.const 0 local.get $s2 i32.store offset=3112
    i32.const 0 local.get $s3 i32.store offset=3116
  )

  ;; guidance.ts cfgStds' five float64 sums over u[0..n), c[0..n), each in element order, as
  ;; lanes: [Σu, Σc], [Σu², Σc²], [Σuc, Σcu]; stored at 3120 (six f64, the last a copy of Σuc).
  (func $stats (export "stats") (param $u i32) (param $c i32) (param $n i32)
    (local $end i32) (local $v v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    f64.const 0 f64x2.splat local.tee $a1 local.tee $a2 local.set $a3
    local.get $u local.get $n i32.const 2 i32.shl i32.add local.set $end
    block $done
      loop $next
        local.get $u local.get $end i32.ge_u br_if $done
        local.get $c local.get $u v128.load32_zero v128.load32_lane 1 f64x2.promote_low_f32x4 local.set $v
        local.get $a1 local.get $v f64x2.add local.set $a1
        local.get $a2 local.get $v local.get $v f64x2.mul f64x2.add local.set $a2
        local.get $a3 local.get $v
        local.get $v local.get $v i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7
        f64x2.mul f64x2.add local.set $a3
        local.get $u i32.const 4 i32.add local.set $u
        local.get $c i32.const 4 i32.add local.set $c
        br $next
      end
    end
    i32.const 0 local.get $a1 v128.store offset=3120
    i32.const 0 local.get $a2 v128.store offset=3136
    i32.const 0 local.get $a3 v128.store offset=3152
  )

;; sampler.ts fusedUpdate over one segment of $n elements, two per f64x2:
  ;;   x ← p·x + q0·b0 [+ q1·b1 [+ q2·b2]] [+ s·z]
  ;; with $nb branches (1–3) and noise when $hasZ; 3 branches without noise add +0 as the
  ;; JavaScript loop does (`+ (z ? σ·z : 0)`). The branch tests are the same for every element.
  ;; An odd $n does its last element first, as lane 1 of the pair ending there (only that lane is
  ;; stored; kernels.ts keeps 4 bytes before every staging buffer), then the pairs from the start.
  (func $update (export "update")
    (param $x i32) (param $b0 i32) (param $b1 i32) (param $b2 i32) (param $z i32) (param $n i32)
    (param $nb i32) (param $hasZ i32) (param $p f64) (param $q0 f64) (param $q1 f64) (param $q2 f64) (param $s f64)
    (local $end i32) (local $odd i32) (local $d i32) (local $v v128)
    (local $vp v128) (local $vq0 v128) (local $vq1 v128) (local $vq2 v128) (local $vs v128)
    local.get $p f64x2.splat local.set $vp
    local.get $q0 f64x2.splat local.set $vq0
    local.get $q1 f64x2.splat local.set $vq1
    local.get $q2 f64x2.splat local.set $vq2
    local.get $s f64x2.splat local.set $vs
    local.get $x local.get $n i32.const -2 i32.and i32.const 2 i32.shl i32.add local.set $end
    local.get $n i32.const 1 i32.and local.tee $odd
    if
      ;; d = 4·(n − 2): the pair (n − 2, n − 1)
      local.get $n i32.const 2 i32.shl i32.const 8 i32.sub local.set $d
    end
    local.get $x local.get $d i32.add local.set $x
    local.get $b0 local.get $d i32.add local.set $b0
    local.get $b1 local.get $d i32.add local.set $b1
    local.get $b2 local.get $d i32.add local.set $b2
    local.get $z local.get $d i32.add local.set $z
    block $done
      loop $pairs
        local.get $odd i32.eqz local.get $x local.get $end i32.ge_u i32.and br_if $done
        local.get $vp local.get $x v128.load64_zero f64x2.promote_low_f32x4 f64x2.mul
        local.get $vq0 local.get $b0 v128.load64_zero f64x2.promote_low_f32x4 f64x2.mul f64x2.add local.set $v
        local.get $nb i32.const 2 i32.ge_u
        if
          local.get $v local.get $vq1 local.get $b1 v128.load64_zero f64x2.promote_low_f32x4 f64x2.mul f64x2.add local.set $v
        end
        local.get $nb i32.const 3 i32.eq
        if
          local.get $v local.get $vq2 local.get $b2 v128.load64_zero f64x2.promote_low_f32x4 f64x2.mul f64x2.add local.set $v
        end
        local.get $hasZ
        if
          local.get $v local.get $vs local.get $z v128.load64_zero f64x2.promote_low_f32x4 f64x2.mul f64x2.add local.set $v
        else
          local.get $nb i32.const 3 i32.eq
          if local.get $v f64.const 0 f64x2.splat f64x2.add local.set $v end
        end
        local.get $odd
        if
          local.get $x local.get $v f32x4.demote_f64x2_zero v128.store32_lane offset=4 1
          i32.const 0 local.get $d i32.sub local.set $d
          i32.const 0 local.set $odd
        else
          local.get $x local.get $v f32x4.demote_f64x2_zero v128.store64_lane 0
          i32.const 8 local.set $d
        end
        ;; next pair: +8 bytes, or from the odd element's pair back to the start (−d)
        local.get $x local.get $d i32.add local.set $x
        local.get $b0 local.get $d i32.add local.set $b0
        local.get $b1 local.get $d i32.add local.set $b1
        local.get $b2 local.get $d i32.add local.set $b2
        local.get $z local.get $d i32.add local.set $z
        br $pairs
      end
    end
  )
)
