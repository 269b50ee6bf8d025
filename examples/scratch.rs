use cutpaste::model::*;
fn main() {
    let dev = tch::Device::Cpu;
    let cfg = ClassifierConfig {
        num_classes: 3,
        head: HeadConfig::paper(),
        fast_path: FastPath::FP32,
    };
    let clf = Classifier::new(&cfg, dev, 0).unwrap();
    clf.save_weights("/tmp/w.safetensors").unwrap();
    tch::manual_seed(1);
    let x = tch::Tensor::randn([2, 3, 64, 64], (tch::Kind::Float, dev));
    // warm BN running stats so eval differs from init
    let _ = clf.forward_t(&(&x * 2.0 + 0.3), true).unwrap();
    clf.save_weights("/tmp/w2.safetensors").unwrap();
    let f = clf.features(&x).unwrap();
    let o = clf.forward_t(&x, true).unwrap();
    tch::Tensor::write_safetensors(
        &[
            ("x", &x),
            ("feat_eval", &f),
            ("logits_train", &o.logits.detach()),
            ("l3_train", &o.maps.layer3.detach().contiguous()),
        ],
        "/tmp/io.safetensors",
    )
    .unwrap();
}
