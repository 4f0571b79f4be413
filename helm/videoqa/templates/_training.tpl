{{/* The pod spec of a training node (Indexed Job pod, or PyTorchJob Master/Worker). */}}
{{- define "videoqa.trainPod" -}}
{{- $root := .root -}}
{{- $t := $root.Values.training -}}
{{- include "videoqa.pullSecrets" $root }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "videoqa.podSecurityContext" $root | nindent 2 }}
{{- with $t.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $t.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $t.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .container }}
    image: {{ include "videoqa.image" (dict "root" $root "name" "train") }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    securityContext:
      {{- include "videoqa.containerSecurityContext" $root | nindent 6 }}
    args:
      {{- toYaml .args | nindent 6 }}
    ports:
      - name: rendezvous
        containerPort: {{ $t.rendezvousPort }}
    env:
      {{- range $k, $v := $t.nccl }}
      - name: {{ $k }}
        value: {{ $v | quote }}
      {{- end }}
      - {name: HOME, value: /tmp}
      - {name: XDG_CACHE_HOME, value: /tmp/.cache}
      - {name: TRITON_CACHE_DIR, value: /tmp/.cache/triton}
      - {name: TORCHINDUCTOR_CACHE_DIR, value: /tmp/.cache/torchinductor}
    resources:
      requests:
        {{- range $k, $v := $t.resources.requests }}
        {{ $k }}: {{ $v | quote }}
        {{- end }}
        nvidia.com/gpu: {{ $t.gpusPerNode }}
      limits:
        {{- range $k, $v := $t.resources.limits }}
        {{ $k }}: {{ $v | quote }}
        {{- end }}
        nvidia.com/gpu: {{ $t.gpusPerNode }}
    volumeMounts:
      - {name: recipe, mountPath: /etc/videoqa, readOnly: true}
      - {name: checkpoints, mountPath: /checkpoints}
      {{- if $t.dataClaim }}
      - {name: data, mountPath: /data, subPath: data}
      - {name: data, mountPath: /models, subPath: models, readOnly: true}
      {{- end }}
      - {name: dshm, mountPath: /dev/shm}
      - {name: tmp, mountPath: /tmp}
volumes:
  - name: recipe
    configMap:
      name: {{ .name }}
  - name: checkpoints
    persistentVolumeClaim:
      claimName: {{ .ckpt }}
  {{- if $t.dataClaim }}
  - name: data
    persistentVolumeClaim:
      claimName: {{ $t.dataClaim }}
  {{- end }}
  - name: dshm
    emptyDir: {medium: Memory, sizeLimit: {{ $t.shmSize }}}
  - name: tmp
    emptyDir: {sizeLimit: 20Gi}
{{- end }}
