package deploytest

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/parleychat/parley/internal/config"
)

// The parts of the Kubernetes objects in deploy/k8s that the tests look at.
type (
	meta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	object struct {
		APIVersion string            `yaml:"apiVersion"`
		Kind       string            `yaml:"kind"`
		Metadata   meta              `yaml:"metadata"`
		Data       map[string]string `yaml:"data"`       // ConfigMap
		StringData map[string]string `yaml:"stringData"` // Secret
		Resources  []string          `yaml:"resources"`  // Kustomization
		node       *yaml.Node
		file       string
	}
	selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"`
		} `yaml:"httpGet"`
	}
	container struct {
		Name  string `yaml:"name"`
		Image string `yaml:"image"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		EnvFrom []struct {
			ConfigMapRef *struct {
				Name string `yaml:"name"`
			} `yaml:"configMapRef"`
			SecretRef *struct {
				Name string `yaml:"name"`
			} `yaml:"secretRef"`
		} `yaml:"envFrom"`
		Env []struct {
			Name string `yaml:"name"`
		} `yaml:"env"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		Lifecycle      struct {
			PreStop *struct {
				Sleep *struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		} `yaml:"securityContext"`
	}
	deployment struct {
		Spec struct {
			Replicas int      `yaml:"replicas"`
			Selector selector `yaml:"selector"`
			Template struct {
				Metadata meta `yaml:"metadata"`
				Spec     struct {
					TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
					SecurityContext               struct {
						RunAsNonRoot bool `yaml:"runAsNonRoot"`
						RunAsUser    int  `yaml:"runAsUser"`
					} `yaml:"securityContext"`
					Containers []container `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	k8sService struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	hpa struct {
		Spec struct {
			ScaleTargetRef struct {
				Kind string `yaml:"kind"`
				Name string `yaml:"name"`
			} `yaml:"scaleTargetRef"`
			MinReplicas int `yaml:"minReplicas"`
			MaxReplicas int `yaml:"maxReplicas"`
		} `yaml:"spec"`
	}
	pdb struct {
		Spec struct {
			Selector selector `yaml:"selector"`
		} `yaml:"spec"`
	}
)

// loadK8s reads every object in deploy/k8s, by kind and name.
func loadK8s(t *testing.T) map[string]map[string]object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/k8s/*.yaml: %v", err)
	}
	objs := map[string]map[string]object{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var o object
			if err := n.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" {
				t.Fatalf("%s: an object without kind", f)
			}
			o.node, o.file = &n, filepath.Base(f)
			if objs[o.Kind] == nil {
				objs[o.Kind] = map[string]object{}
			}
			objs[o.Kind][o.Metadata.Name] = o
		}
	}
	return objs
}

// one returns the only object of kind, decoded into v.
func one(t *testing.T, objs map[string]map[string]object, kind string, v any) object {
	t.Helper()
	if len(objs[kind]) != 1 {
		t.Fatalf("deploy/k8s: %d %s objects, want 1", len(objs[kind]), kind)
	}
	for _, o := range objs[kind] {
		if v != nil {
			if err := o.node.Decode(v); err != nil {
				t.Fatalf("%s: %v", o.file, err)
			}
		}
		return o
	}
	panic("unreachable")
}

func TestKubernetes(t *testing.T) {
	objs := loadK8s(t)

	// kubectl apply -k applies what kustomization.yaml lists: every file.
	kust := one(t, objs, "Kustomization", nil)
	files, _ := filepath.Glob(filepath.Join(root, "deploy", "k8s", "*.yaml"))
	for _, f := range files {
		if name := filepath.Base(f); name != kust.file && !slices.Contains(kust.Resources, name) {
			t.Errorf("deploy/k8s/%s is not in kustomization.yaml's resources", name)
		}
	}

	var dep deployment
	depObj := one(t, objs, "Deployment", &dep)
	cm := one(t, objs, "ConfigMap", nil)
	secret := one(t, objs, "Secret", nil)

	// The ConfigMap and Secret together are a valid gateway configuration
	// of variables the gateway knows.
	env := map[string]string{}
	maps.Copy(env, cm.Data)
	maps.Copy(env, secret.StringData)
	for k := range env {
		if !slices.Contains(config.Keys(), k) {
			t.Errorf("deploy/k8s: %s is not a variable the gateway reads", k)
		}
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("deploy/k8s: ConfigMap and Secret: %v", err)
	}
	if cfg.AMQPURL == "" || cfg.RedisURL == "" {
		t.Error("deploy/k8s: the Secret does not point at RabbitMQ and Redis")
	}

	spec := dep.Spec.Template.Spec
	if dep.Spec.Replicas != 3 {
		t.Errorf("Deployment: %d replicas, want 3", dep.Spec.Replicas)
	}
	if !subset(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels) {
		t.Errorf("Deployment: selector %v does not match the pod labels %v", dep.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("Deployment: %d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	var portNames []string
	for _, p := range c.Ports {
		portNames = append(portNames, p.Name)
	}
	for name, pr := range map[string]struct {
		p    *probe
		path string
	}{"readinessProbe": {c.ReadinessProbe, "/readyz"}, "livenessProbe": {c.LivenessProbe, "/healthz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil || pr.p.HTTPGet.Path != pr.path {
			t.Errorf("Deployment: %s is not an HTTP GET of %s", name, pr.path)
		} else if !slices.Contains(portNames, pr.p.HTTPGet.Port) {
			t.Errorf("Deployment: %s asks port %q, which the container does not name", name, pr.p.HTTPGet.Port)
		}
	}
	preStop := 0
	if c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Error("Deployment: no preStop sleep: endpoints would still send connections to a draining gateway")
	} else {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	grace := time.Duration(spec.TerminationGracePeriodSeconds) * time.Second
	if need := time.Duration(preStop)*time.Second + cfg.ShutdownTimeout; grace <= need {
		t.Errorf("Deployment: terminationGracePeriodSeconds %v is not above the preStop sleep plus PARLEY_SHUTDOWN_TIMEOUT (%v)", grace, need)
	}
	if !spec.SecurityContext.RunAsNonRoot || spec.SecurityContext.RunAsUser == 0 {
		t.Error("Deployment: the pod may run as root")
	}
	if uid := dockerfileUser(t); spec.SecurityContext.RunAsUser != uid {
		t.Errorf("Deployment: runAsUser %d, but the image's user is %d", spec.SecurityContext.RunAsUser, uid)
	}
	if !c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Error("Deployment: the container's root file system is writable or it may escalate privileges")
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("Deployment: no %s request (the scheduler and the HPA need one)", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("Deployment: no memory limit")
	}
	var refs []string
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef != nil {
			refs = append(refs, "ConfigMap/"+e.ConfigMapRef.Name)
		}
		if e.SecretRef != nil {
			refs = append(refs, "Secret/"+e.SecretRef.Name)
		}
	}
	for _, want := range []string{"ConfigMap/" + cm.Metadata.Name, "Secret/" + secret.Metadata.Name} {
		if !slices.Contains(refs, want) {
			t.Errorf("Deployment: envFrom does not use %s", want)
		}
	}
	for _, e := range c.Env {
		if !slices.Contains(config.Keys(), e.Name) {
			t.Errorf("Deployment: env %s is not a variable the gateway reads", e.Name)
		}
	}

	var svc k8sService
	one(t, objs, "Service", &svc)
	if !subset(svc.Spec.Selector, dep.Spec.Template.Metadata.Labels) {
		t.Errorf("Service: selector %v does not select the gateway pods", svc.Spec.Selector)
	}
	for _, p := range svc.Spec.Ports {
		if !slices.Contains(portNames, p.TargetPort) {
			t.Errorf("Service: targetPort %q is not a port of the container", p.TargetPort)
		}
	}

	var h hpa
	one(t, objs, "HorizontalPodAutoscaler", &h)
	if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != depObj.Metadata.Name {
		t.Errorf("HorizontalPodAutoscaler: scales %+v, not the Deployment", h.Spec.ScaleTargetRef)
	}
	if h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < h.Spec.MinReplicas {
		t.Errorf("HorizontalPodAutoscaler: replicas %d..%d", h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}

	var b pdb
	one(t, objs, "PodDisruptionBudget", &b)
	if !subset(b.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels) {
		t.Errorf("PodDisruptionBudget: selector %v does not select the gateway pods", b.Spec.Selector.MatchLabels)
	}
}

// dockerfileUser returns the numeric user every final stage of
// deploy/Dockerfile runs as.
func dockerfileUser(t *testing.T) int {
	t.Helper()
	uid := -1
	for _, st := range dockerfileStages(t) {
		if st.name == "build" {
			continue
		}
		user, _, _ := strings.Cut(st.user, ":")
		n, err := strconv.Atoi(user)
		if err != nil {
			t.Fatalf("deploy/Dockerfile: stage %s runs as %q, want a numeric user", st.name, st.user)
		}
		if uid >= 0 && n != uid {
			t.Fatalf("deploy/Dockerfile: the final stages run as different users")
		}
		uid = n
	}
	return uid
}

// subset reports whether every label of sel is in labels, with its value.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
