/**
 * What a GPU instance does at boot (the launch template's user data): ECS settings for Spot
 * draining and cached image pulls, the cache volume on the NVMe instance store, and the host half
 * of the worker's Spot watch.
 */
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { WORKER_PATHS, WORKER_UID } from './names.ts';

/**
 * Formats and mounts the NVMe instance store (RAID 0 over all of its disks) at the cache root
 * where the instance type has one; elsewhere the cache stays on the gp3 root volume. The cache
 * root then holds `.storage` (`instance-store` or `ebs`), which the worker reports.
 */
export function instanceStoreCommands(): string[] {
  const root = WORKER_PATHS.hostCacheRoot;
  return [
    `mkdir -p ${root}`,
    // Instance-store NVMe disks name themselves "Amazon EC2 NVMe Instance Storage"; EBS ones do not.
    "disks=$(ls /dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_* 2>/dev/null | grep -v -- '-part' | xargs -r -n1 readlink -f | sort -u || true)",
    'if [ -n "$disks" ]; then',
    '  n=$(echo "$disks" | wc -l)',
    '  if [ "$n" -gt 1 ]; then',
    '    command -v mdadm >/dev/null || dnf install -y -q mdadm',
    '    mdadm --create /dev/md0 --run --level=0 --raid-devices="$n" $disks',
    '    dev=/dev/md0',
    '  else',
    '    dev=$disks',
    '  fi',
    '  mkfs.xfs -f -K "$dev"',
    `  mount -o noatime "$dev" ${root}`,
    `  echo instance-store > ${root}/${WORKER_PATHS.cacheStorageMarker}`,
    'else',
    `  echo ebs > ${root}/${WORKER_PATHS.cacheStorageMarker}`,
    'fi',
  ];
}

/**
 * The host half of the worker's Spot watch (gpu-worker/src/spot.ts): containers cannot reach the
 * instance metadata service (hop limit 1 keeps the instance role from them), so a host loop polls
 * IMDSv2 every 5 s and copies EC2's instance-action notice into the cache volume, where every
 * job's worker sees it as $CIL_CACHE_DIR/.spot-instance-action, checkpoints and exits 143.
 */
export function spotNoticeCommands(): string[] {
  const notice = `${WORKER_PATHS.hostCacheRoot}/${WORKER_PATHS.spotNotice}`;
  const imds = 'http://169.254.169.254/latest';
  return [
    "cat > /usr/local/bin/cil-spot-watch <<'WATCH'",
    '#!/bin/bash',
    'while true; do',
    `  token=$(curl -s -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' ${imds}/api/token || true)`,
    `  if [ -n "$token" ] && notice=$(curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" ${imds}/meta-data/spot/instance-action); then`,
    `    printf '%s' "$notice" > ${notice}.tmp && mv ${notice}.tmp ${notice}`,
    '  fi',
    '  sleep 5',
    'done',
    'WATCH',
    'chmod 755 /usr/local/bin/cil-spot-watch',
    'systemd-run --unit=cil-spot-watch /usr/local/bin/cil-spot-watch',
  ];
}

/** User data of the GPU instances (Batch requires MIME multipart in launch templates). */
export function instanceUserData(): ec2.MultipartUserData {
  const script = ec2.UserData.forLinux();
  script.addCommands(
    'set -euo pipefail',
    // Spot interruption notice → ECS drains the instance → the worker gets SIGTERM and checkpoints.
    "cat >> /etc/ecs/ecs.config <<'EOF'",
    'ECS_ENABLE_SPOT_INSTANCE_DRAINING=true',
    // The CUDA image is large: reuse the cached copy on an instance that already pulled it.
    'ECS_IMAGE_PULL_BEHAVIOR=prefer-cached',
    // Time between SIGTERM and SIGKILL: room for the worker to write its checkpoint.
    'ECS_CONTAINER_STOP_TIMEOUT=110s',
    'EOF',
    ...instanceStoreCommands(),
    // Model bundles cached across jobs on this instance, writable by the worker's user.
    `mkdir -p ${WORKER_PATHS.hostModelCache}`,
    `chown ${WORKER_UID}:${WORKER_UID} ${WORKER_PATHS.hostCacheRoot} ${WORKER_PATHS.hostModelCache}`,
    ...spotNoticeCommands(),
  );
  const ud = new ec2.MultipartUserData();
  ud.addUserDataPart(script, ec2.MultipartBody.SHELL_SCRIPT, true);
  return ud;
}
